"""InverseFaceNet re-created (see README.md).

`from ifn import reconstruct` gives the reconstruction API (ifn.reconstruct: the module ifn.apps.reconstruct,
callable as `reconstruct(images, ...)`); it is imported on first use so that `import ifn` stays light (no torch).
"""

_LAZY = {"reconstruct": ".apps.reconstruct"}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return importlib.import_module(_LAZY[name], __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted({*globals(), *_LAZY})
