"""The commands of ``vidq``, grouped by what they act on; ``vidq.__main__`` assembles them."""
