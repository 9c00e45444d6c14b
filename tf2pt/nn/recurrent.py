"""Recurrent layers that compute exactly what Keras' and TF1's recurrent layers compute, where
``nn.LSTM`` / ``nn.GRU`` / ``nn.RNN`` cannot:

* :class:`GRU` with ``reset_after=False`` (Keras' GRU before TF 2's default changed, and TF1's
  ``GRUCell``): the reset gate multiplies the state *before* the recurrent matmul,
  ``n = act(W_in x + b_in + W_hn (r * h) + b_hn)``. ``nn.GRU`` applies it after
  (``r * (W_hn h + b_hn)``), and no choice of weights turns one into the other.
* any activation other than ``tanh`` / ``sigmoid`` (``nn.LSTM`` and ``nn.GRU`` hard-code them),
  in particular Keras 2's ``hard_sigmoid``, ``clip(0.2 x + 0.5, 0, 1)``, which is *not*
  torch's ``Hardsigmoid`` (``clip(x / 6 + 0.5, 0, 1)``, which Keras 3 adopted under the same
  name): see :class:`KerasHardSigmoid` and :func:`activation`.
* :class:`TF1GRU`, TF1's ``GRUCell`` run over a sequence, with one parameter per TF variable part.

:class:`LSTM`, :class:`GRU` and :class:`SimpleRNN` keep ``nn.LSTM``/``nn.GRU``/``nn.RNN``'s
parameter names and layouts (``weight_ih_l0`` ``[gates * hidden, input]``, gates in torch's
order, ``_reverse`` for the backward direction), their call signature and their outputs
(``output, h_n`` -- ``output, (h_n, c_n)`` for the LSTM), so the same conversion rules fill
either. One layer each; stack them for more. They loop over time in Python: exact, not fast.
"""

from __future__ import annotations

import math
from typing import Callable, Dict, List, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

Activation = Union[str, Callable[[torch.Tensor], torch.Tensor], None]


def keras2_hard_sigmoid(x: torch.Tensor) -> torch.Tensor:
    """Keras 2's (``tf_keras``) ``hard_sigmoid``: ``clip(0.2 * x + 0.5, 0, 1)``."""
    return torch.clamp(x * 0.2 + 0.5, 0.0, 1.0)


class KerasHardSigmoid(nn.Module):
    """Keras 2's ``hard_sigmoid``, ``clip(0.2 x + 0.5, 0, 1)``: slope 0.2, saturating at +-2.5.
    torch's ``nn.Hardsigmoid`` (slope 1/6, saturating at +-3) is Keras 3's ``hard_sigmoid``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return keras2_hard_sigmoid(x)


def _linear(x: torch.Tensor) -> torch.Tensor:
    return x


#: Activations by name. ``hard_sigmoid`` is deliberately absent: Keras 2 and Keras 3 mean
#: different functions by it; say ``keras2_hard_sigmoid`` or ``keras3_hard_sigmoid``.
ACTIVATIONS: Dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
    "relu": torch.relu,
    "linear": _linear,
    "elu": F.elu,
    "selu": F.selu,
    "softplus": F.softplus,
    "softsign": F.softsign,
    "swish": F.silu,
    "silu": F.silu,
    "exponential": torch.exp,
    "keras2_hard_sigmoid": keras2_hard_sigmoid,
    "keras3_hard_sigmoid": F.hardsigmoid,
}


def activation(spec: Activation) -> Callable[[torch.Tensor], torch.Tensor]:
    """An activation by name (see :data:`ACTIVATIONS`; ``None`` is ``linear``), or ``spec``
    itself when it is a callable."""
    if spec is None:
        return _linear
    if callable(spec):
        return spec
    if spec == "hard_sigmoid":
        raise ValueError("'hard_sigmoid' is ambiguous: Keras 2 means clip(0.2x + 0.5, 0, 1), Keras 3 (and torch's "
                         "Hardsigmoid) clip(x/6 + 0.5, 0, 1); say 'keras2_hard_sigmoid' or 'keras3_hard_sigmoid' "
                         "(tf2pt.keras_rules.keras_activation does it from a layer config)")
    try:
        return ACTIVATIONS[spec]
    except KeyError:
        raise ValueError(f"unknown activation {spec!r}; known: {', '.join(sorted(ACTIVATIONS))}") from None


_resolve = activation  # (the layers' own ``activation`` arguments shadow the name)


def _name(fn) -> str:
    for k, v in ACTIVATIONS.items():
        if v is fn:
            return k
    return getattr(fn, "__name__", type(fn).__name__)


class _Recurrent(nn.Module):
    """One recurrent layer, one or two directions, torch's parameter names and outputs."""

    gates = 1

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, batch_first: bool = False,
                 bidirectional: bool = False, activation: Activation = "tanh",
                 recurrent_activation: Activation = "sigmoid"):
        super().__init__()
        self.input_size, self.hidden_size = int(input_size), int(hidden_size)
        self.bias, self.batch_first, self.bidirectional = bool(bias), bool(batch_first), bool(bidirectional)
        self.activation = _resolve(activation)
        self.recurrent_activation = _resolve(recurrent_activation)
        self._suffixes = ["_l0", "_l0_reverse"] if bidirectional else ["_l0"]
        g, h = self.gates * self.hidden_size, self.hidden_size
        for s in self._suffixes:
            self.register_parameter("weight_ih" + s, nn.Parameter(torch.empty(g, self.input_size)))
            self.register_parameter("weight_hh" + s, nn.Parameter(torch.empty(g, h)))
            if self.bias:
                self.register_parameter("bias_ih" + s, nn.Parameter(torch.empty(g)))
                self.register_parameter("bias_hh" + s, nn.Parameter(torch.empty(g)))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        bound = 1.0 / math.sqrt(self.hidden_size) if self.hidden_size else 0.0
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)

    def _params(self, s: str):
        b = self.bias
        return (getattr(self, "weight_ih" + s), getattr(self, "weight_hh" + s),
                getattr(self, "bias_ih" + s) if b else None, getattr(self, "bias_hh" + s) if b else None)

    def _state_count(self) -> int:
        return 1

    def forward(self, x: torch.Tensor, hx=None):
        batched = x.dim() == 3
        if not batched:
            x = x.unsqueeze(1)
        elif self.batch_first:
            x = x.transpose(0, 1)
        steps, batch = x.shape[0], x.shape[1]
        dirs = len(self._suffixes)
        n_states = self._state_count()
        if hx is None:
            zeros = x.new_zeros(dirs, batch, self.hidden_size)
            states = [zeros] * n_states
        else:
            states = list(hx) if n_states > 1 else [hx]
            if not batched:
                states = [s.unsqueeze(1) for s in states]
        outputs: List[torch.Tensor] = []
        finals: List[List[torch.Tensor]] = []
        for d, s in enumerate(self._suffixes):
            params = self._params(s)
            state = tuple(st[d] for st in states)
            order = range(steps - 1, -1, -1) if d == 1 else range(steps)
            ys: List[Optional[torch.Tensor]] = [None] * steps
            for t in order:
                state = self._step(x[t], state, *params)
                ys[t] = state[0]
            outputs.append(torch.stack(ys, 0) if steps else x.new_zeros(0, batch, self.hidden_size))
            finals.append(list(state))
        out = torch.cat(outputs, -1) if dirs > 1 else outputs[0]
        last = [torch.stack([f[i] for f in finals], 0) for i in range(n_states)]
        if not batched:
            out = out.squeeze(1)
            last = [h.squeeze(1) for h in last]
        elif self.batch_first:
            out = out.transpose(0, 1)
        return out, (tuple(last) if n_states > 1 else last[0])

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        if not self.bias:
            s += ", bias=False"
        if self.batch_first:
            s += ", batch_first=True"
        if self.bidirectional:
            s += ", bidirectional=True"
        return s + f", activation={_name(self.activation)}, recurrent_activation={_name(self.recurrent_activation)}"


def _affine(x, w, b):
    return F.linear(x, w, b)


class LSTM(_Recurrent):
    """``nn.LSTM`` (one layer) with any ``activation`` (torch: tanh) and
    ``recurrent_activation`` (torch: sigmoid), e.g. Keras 2's ``hard_sigmoid``."""

    gates = 4

    def _state_count(self) -> int:
        return 2

    def _step(self, x, state, w_ih, w_hh, b_ih, b_hh):
        h, c = state
        z = _affine(x, w_ih, b_ih) + _affine(h, w_hh, b_hh)
        i, f, g, o = z.chunk(4, -1)
        ra, act = self.recurrent_activation, self.activation
        c = ra(f) * c + ra(i) * act(g)
        return ra(o) * act(c), c


class GRU(_Recurrent):
    """``nn.GRU`` (one layer) with any activations and with Keras' ``reset_after`` choice.

    ``reset_after=True`` is ``nn.GRU``'s (and Keras 3's default) formulation. With
    ``reset_after=False`` (Keras 2's default before TF 2, TF1's ``GRUCell``) the reset gate
    scales the state before the recurrent matmul: ``n = act(W_in x + b_in + W_hn (r * h) + b_hn)``,
    which ``nn.GRU`` cannot compute. Gates are in torch's order r, z, n either way."""

    gates = 3

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, batch_first: bool = False,
                 bidirectional: bool = False, activation: Activation = "tanh",
                 recurrent_activation: Activation = "sigmoid", reset_after: bool = True):
        self.reset_after = bool(reset_after)
        super().__init__(input_size, hidden_size, bias, batch_first, bidirectional, activation, recurrent_activation)

    def _step(self, x, state, w_ih, w_hh, b_ih, b_hh):
        (h,) = state
        u = self.hidden_size
        gi = _affine(x, w_ih, b_ih)
        ra, act = self.recurrent_activation, self.activation
        if self.reset_after:
            gh = _affine(h, w_hh, b_hh)
            r = ra(gi[..., :u] + gh[..., :u])
            z = ra(gi[..., u:2 * u] + gh[..., u:2 * u])
            n = act(gi[..., 2 * u:] + r * gh[..., 2 * u:])
        else:
            gh = _affine(h, w_hh[:2 * u], None if b_hh is None else b_hh[:2 * u])
            r = ra(gi[..., :u] + gh[..., :u])
            z = ra(gi[..., u:2 * u] + gh[..., u:])
            n = act(gi[..., 2 * u:] + _affine(r * h, w_hh[2 * u:], None if b_hh is None else b_hh[2 * u:]))
        return ((1 - z) * n + z * h,)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", reset_after={self.reset_after}"


class SimpleRNN(_Recurrent):
    """``nn.RNN`` (one layer) with any ``activation`` (torch: tanh or relu), as Keras'
    ``SimpleRNN`` allows."""

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, batch_first: bool = False,
                 bidirectional: bool = False, activation: Activation = "tanh"):
        super().__init__(input_size, hidden_size, bias, batch_first, bidirectional, activation, None)

    def _step(self, x, state, w_ih, w_hh, b_ih, b_hh):
        (h,) = state
        return (self.activation(_affine(x, w_ih, b_ih) + _affine(h, w_hh, b_hh)),)


class TF1GRU(nn.Module):
    """TF1's ``tf.compat.v1.nn.rnn_cell.GRUCell`` over a sequence (as ``dynamic_rnn`` runs it).

    The cell computes ``r, u = sigmoid([x, h] W_g + b_g)``, ``c = act([x, r * h] W_c + b_c)``,
    ``h' = u * h + (1 - u) * c``: a reset-before GRU. Its two TF kernels each hold input and
    recurrent rows, so the parameters follow the TF variables, each split in two:
    ``gates_weight_ih [2u, in]``, ``gates_weight_hh [2u, u]`` (gates r, u), ``gates_bias [2u]``,
    ``candidate_weight_ih [u, in]``, ``candidate_weight_hh [u, u]``, ``candidate_bias [u]``
    (transforms ``tf1_gru_gates_kernel_ih/_hh``, ``tf1_gru_candidate_kernel_ih/_hh``).
    Returns ``output, h_n`` like ``nn.GRU`` (``h_n`` of shape ``[1, batch, u]``)."""

    def __init__(self, input_size: int, hidden_size: int, batch_first: bool = False, activation: Activation = "tanh"):
        super().__init__()
        self.input_size, self.hidden_size, self.batch_first = int(input_size), int(hidden_size), bool(batch_first)
        self.activation = _resolve(activation)
        u, n = self.hidden_size, self.input_size
        self.gates_weight_ih = nn.Parameter(torch.empty(2 * u, n))
        self.gates_weight_hh = nn.Parameter(torch.empty(2 * u, u))
        self.gates_bias = nn.Parameter(torch.empty(2 * u))
        self.candidate_weight_ih = nn.Parameter(torch.empty(u, n))
        self.candidate_weight_hh = nn.Parameter(torch.empty(u, u))
        self.candidate_bias = nn.Parameter(torch.empty(u))
        bound = 1.0 / math.sqrt(u) if u else 0.0
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)

    def forward(self, x: torch.Tensor, hx: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor]:
        if self.batch_first:
            x = x.transpose(0, 1)
        u = self.hidden_size
        h = x.new_zeros(x.shape[1], u) if hx is None else hx[0]
        ys = []
        for t in range(x.shape[0]):
            g = torch.sigmoid(F.linear(x[t], self.gates_weight_ih, self.gates_bias) + F.linear(h, self.gates_weight_hh))
            r, z = g[..., :u], g[..., u:]
            c = self.activation(F.linear(x[t], self.candidate_weight_ih, self.candidate_bias)
                                + F.linear(r * h, self.candidate_weight_hh))
            h = z * h + (1 - z) * c
            ys.append(h)
        out = torch.stack(ys, 0) if ys else x.new_zeros(0, x.shape[1], u)
        if self.batch_first:
            out = out.transpose(0, 1)
        return out, h.unsqueeze(0)

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}, activation={_name(self.activation)}"
