"""The real transformers model of a config folder, and the bytes its own cache holds.

Shared by the tests that check our sizes against transformers (test_passes_hf,
test_hf_saved_configs): the model is built the way a user's code builds it, through
`AutoConfig.from_pretrained` on the folder, and runs on CPU with random weights.
"""

import inspect

import torch

from marconi.passes.hf import cache_keyword


def real_model(folder, dtype: torch.dtype):
    import transformers
    config = transformers.AutoConfig.from_pretrained(folder, local_files_only=True)
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config, dtype=dtype)
    return model.eval().requires_grad_(False)     # see passes/hf.py HFRunner


def cache_bytes_per_layer(model, lengths=(5, 9)):
    """(length, [bytes of each decoder layer's cache]) after prefills up to each length."""
    name = cache_keyword(inspect.signature(model.forward).parameters)
    vocab = model.config.get_text_config().vocab_size
    ids = torch.randint(0, vocab, (1, max(lengths)), generator=torch.Generator().manual_seed(1))
    cache, done = None, 0
    with torch.no_grad():
        for length in lengths:
            kwargs = {name: cache} if cache is not None else {}
            cache = getattr(model(input_ids=ids[:, done:length], use_cache=True, **kwargs), name)
            done = length
            yield length, _layer_bytes(cache)


def decoder_layer(path: str) -> int:
    """The decoder layer index in a module path (model.layers.3.mixer -> 3)."""
    return int(next(p for p in path.split(".") if p.isdigit()))


def _layer_bytes(cache) -> list[int]:
    out = []
    for layer in cache.layers:
        total = 0
        for attr in ("keys", "values", "conv_states", "recurrent_states"):
            value = getattr(layer, attr, None)
            for t in value.values() if isinstance(value, dict) else [value]:
                if isinstance(t, torch.Tensor):
                    total += t.numel() * t.element_size()
        out.append(total)
    return out
