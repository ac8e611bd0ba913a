"""Logit distillation (Gemma 2 section 3.2, Gemma 3 section 2.2): the losses, the teachers (trained
runs and Hugging Face folders) and the distillation sweeps."""
