"""Triton kernels, importable as labkit.kernels; each op file pairs kernels with a plain-torch reference.

One file per op, each holding its forward and backward kernels, the launcher, an autograd.Function, the public
function and `<op>_reference()` in plain torch:

    rmsnorm.py        rms_norm                      RMSNorm
    rope.py           apply_rope                    rotary embedding of q and k
    swiglu.py         swiglu                        silu(gate) * up
    cross_entropy.py  linear_cross_entropy          LM-head cross-entropy, chunked: no full logits
    logprobs.py       selected_logprobs,            log p(label) and entropy (DPO, GRPO); the linear_ form
                      linear_selected_logprobs      starts from hidden states, chunked like the cross-entropy
    lora.py           lora_linear                   base matmul + scaled low-rank path in one kernel
    patch.py          patch, unpatch                swap a Llama/Qwen model's forwards for these ops
    runtime.py        backend_name, use_triton      where Triton runs; tile sizes for GPU vs interpreter
    profiling.py      peak_bytes                    peak allocator memory of a call, CPU or GPU
    compare.py        side_by_side, ce_memory       each op beside its reference; chunked CE memory (nb 11)

Each public function runs its kernels on a GPU, or on the CPU under TRITON_INTERPRET=1 (set before the first
import; slow, for tests), and its torch path anywhere else; `backend_name()` says which. The cross-entropy and
log-prob functions' torch path keeps the chunking, so their memory saving holds on a CPU too.
"""

from labkit.kernels.cross_entropy import (
    IGNORE_INDEX,
    linear_cross_entropy,
    linear_cross_entropy_reference,
)
from labkit.kernels.logprobs import (
    linear_selected_logprobs,
    linear_selected_logprobs_reference,
    selected_logprobs,
    selected_logprobs_reference,
)
from labkit.kernels.lora import lora_linear, lora_linear_reference
from labkit.kernels.patch import causal_lm_loss, patch, unpatch
from labkit.kernels.rmsnorm import rms_norm, rms_norm_reference
from labkit.kernels.rope import apply_rope, apply_rope_reference
from labkit.kernels.runtime import HAVE_TRITON, backend_name
from labkit.kernels.swiglu import swiglu, swiglu_reference

__all__ = [
    "HAVE_TRITON", "IGNORE_INDEX", "apply_rope", "apply_rope_reference", "backend_name", "causal_lm_loss",
    "linear_cross_entropy", "linear_cross_entropy_reference", "linear_selected_logprobs",
    "linear_selected_logprobs_reference", "lora_linear", "lora_linear_reference", "patch", "rms_norm",
    "rms_norm_reference", "selected_logprobs", "selected_logprobs_reference", "swiglu", "swiglu_reference",
    "unpatch",
]
