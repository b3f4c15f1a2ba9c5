"""The arguments every weight-carrying layer shares with keras.layers.Conv2D/Dense."""

import keras


class WeightArgsMixin:
    """Activation, bias, and kernel/bias initializers, regularizers and constraints.

    ``set_weight_args`` normalises them once in ``__init__``; ``add_bias`` creates
    the bias in ``build``; ``weight_args_config`` serialises them for ``get_config``.
    """

    _WEIGHT_ARGS = {
        "activation": keras.activations,
        "kernel_initializer": keras.initializers,
        "bias_initializer": keras.initializers,
        "kernel_regularizer": keras.regularizers,
        "bias_regularizer": keras.regularizers,
        "kernel_constraint": keras.constraints,
        "bias_constraint": keras.constraints,
    }

    def set_weight_args(self, use_bias, **args):
        self.use_bias = use_bias
        for name, module in self._WEIGHT_ARGS.items():
            setattr(self, name, module.get(args[name]))

    def add_bias(self, size):
        """The ``(size,)`` bias variable, or `None` when ``use_bias`` is false."""
        if not self.use_bias:
            return None
        return self.add_weight(
            name="bias",
            shape=(size,),
            initializer=self.bias_initializer,
            regularizer=self.bias_regularizer,
            constraint=self.bias_constraint,
        )

    def add_kernel_weight(self, name, shape, initializer):
        """A kernel-like variable with the layer's kernel regularizer and constraint."""
        return self.add_weight(
            name=name,
            shape=shape,
            initializer=initializer,
            regularizer=self.kernel_regularizer,
            constraint=self.kernel_constraint,
        )

    def weight_args_config(self):
        config = {"use_bias": self.use_bias}
        for name, module in self._WEIGHT_ARGS.items():
            config[name] = module.serialize(getattr(self, name))
        # Keras' Layer takes and keeps it; its get_config leaves it to Conv2D & co.
        if self.activity_regularizer is not None:
            config["activity_regularizer"] = keras.regularizers.serialize(
                self.activity_regularizer)
        return config
