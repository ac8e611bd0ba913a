"""Shape vocabulary used in every annotation.

*b: optional batch axes, t: tokens in the sequence, s: keys (cache slots), d: model width,
h: query heads, k: kv heads, e: head dim, f: MLP width, r: recurrent (RG-LRU) width, v: vocabulary.
"""

from jaxtyping import Array, Float, Int

Tokens = Int[Array, "*b t"]
Positions = Int[Array, " t"]
Hidden = Float[Array, "*b t d"]
Logits = Float[Array, "*b t v"]
Queries = Float[Array, "t h e"]
Keys = Float[Array, "s k e"]
Recurrent = Float[Array, "t r"]
