"""Fixtures of the Hugging Face parity tests."""

import pytest


@pytest.fixture(scope="session")
def randomize():
    """``randomize(model, seed=0)``: every parameter of a torch model (norm weights included) drawn from
    N(0, 0.3^2), so no (1 + w) or bias hides a bug; returns the model in eval mode."""
    torch = pytest.importorskip("torch")

    def draw(model, seed=0):
        torch.manual_seed(seed)
        with torch.no_grad():
            for p in model.parameters():
                torch.nn.init.normal_(p, std=0.3)
        return model.eval()

    return draw
