"""Files for serving and for phones: SavedModel (`saved_model`), the Android .tflite with metadata
(`android`, `mediapipe_metadata`), and ONNX (`onnx_file`)."""
