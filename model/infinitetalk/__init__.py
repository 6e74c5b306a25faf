"""The InfiniteTalk generator: the official 14B DiT on diffusers/transformers, streamed chunk by chunk.

``build(**options)`` returns the Generator (see ``generator.py``); heavy imports happen only then.
"""


def build(**options):
    from model.infinitetalk.generator import build_generator

    return build_generator(**options)
