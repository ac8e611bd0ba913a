"""How models are trained, evaluated and swept: data, tokenizer, train loop, evals, sweeps, plots."""
