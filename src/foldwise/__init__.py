"""foldwise: honest model selection by cross-validation, with a test-set lockbox."""

__version__ = "0.1.0"
