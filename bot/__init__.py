"""dialobot core: the platform-neutral chat engine, generation, commands and configuration."""

__version__ = "0.1.0"
