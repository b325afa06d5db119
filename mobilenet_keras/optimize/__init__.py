"""tensorflow-model-optimization on a tf_keras twin: quantization-aware training (`qat`, `qat_scheme`),
pruning and clustering (`compress`). The only part of the package that imports tfmot (`tfmot_loader`)."""
