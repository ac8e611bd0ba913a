"""Shape vocabulary used in every annotation.

t: tokens in the sequence, s: keys (cache slots), d: model width, h: query heads, k: kv heads,
e: head dim, f: MLP width, r: recurrent (RG-LRU) width, v: vocabulary.
"""

from jaxtyping import Array, Float, Int

Tokens = Int[Array, " t"]
Positions = Int[Array, " t"]
Hidden = Float[Array, "t d"]
Logits = Float[Array, "t v"]
Queries = Float[Array, "t h e"]
Keys = Float[Array, "s k e"]
Recurrent = Float[Array, "t r"]
