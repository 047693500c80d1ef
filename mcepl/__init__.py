"""mcepl: decentralized personalized learning with binary masks over real sockets."""
__version__ = "0.1.0"
