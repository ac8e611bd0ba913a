"""What a trained model is measured by: the evaluation suite of a run (``run``), its probes (loss by
position, passkey, MQAR), generation and sampling."""
