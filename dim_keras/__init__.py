"""Deep InfoMax in Keras 3."""
