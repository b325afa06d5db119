"""Training with `model.fit`: image datasets (`datasets`), the recipe and run folders (`trainer`, `run_folder`).
Needs only the model core."""
