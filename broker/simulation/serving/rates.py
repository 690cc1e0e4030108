"""How long one request keeps a replica busy: per-stream prefill and decode rates per GPU.

The model is a replica with `max_batch` slots (continuous batching): a request holds one
slot for ``context_tokens / prefill_tok_s + generated_tokens / decode_tok_s`` seconds, the
same whether the other slots are busy or not. The rates are per stream at a full batch, so
a full replica reproduces the measured throughput; a lightly loaded one is pessimistic
(real streams run faster when few share the GPU), which errs towards missing the SLO.

Source: the "Peak Throughput" tables of NVIDIA TensorRT-LLM v0.9.0 `docs/source/performance.md`
(Apache-2.0; transcribed in the shared data, `gpu-perf/raw/nvidia_tensorrt-llm/`), output
tokens/s per GPU at a stated batch size and tensor parallelism. Two rows per GPU and model
are used, both with 2,048 prompt tokens (the nearest measured shape to production chat and
code prompts of 1–1.5 k tokens) and 128 or 2,048 output tokens. Each row gives the time
one stream spends per request, ``batch × output / (throughput_per_gpu × tp)``; the two
equations ``t = 2048 / p + output / d`` solve for the prefill rate `p` and the decode rate
`d`. `max_batch` is the smaller of the two batch sizes (the KV cache at 2 k context limits
it), and a replica is `tp` GPUs. The rows' batch sizes differ, so the split is approximate.
"""

from __future__ import annotations

from dataclasses import dataclass

from broker.domain.errors import BrokerError

__all__ = [
    "DEFAULT_LLM",
    "SOURCE",
    "RatesError",
    "ServingRates",
    "known",
    "measured_rates",
]

SOURCE = (
    "NVIDIA TensorRT-LLM v0.9.0 docs/source/performance.md, Peak Throughput "
    "(commit 250d9c29; input 2048, output 128 and 2048)"
)
# Llama-2-70B is one of the two models Splitwise (the paper that released the Azure traces)
# evaluated on them; the table's "LLaMA 70B" is the closest measured row.
DEFAULT_LLM = "LLaMA 70B"
_PROMPT = 2048

# (GPU model as the broker names it, LLM, batch size, tp, output tokens, output tok/s per GPU).
# The table's "A100" is the A100 SXM4 80GB (shared gpu-perf README, name mapping); its rows
# are FP16, the others FP8.
_ROWS: tuple[tuple[str, str, int, int, int, float], ...] = (
    ("H200", "GPT-J 6B", 64, 1, 128, 2785),
    ("H200", "GPT-J 6B", 64, 1, 2048, 3753),
    ("H200", "Mistral 7B", 64, 1, 128, 2423),
    ("H200", "Mistral 7B", 56, 1, 2048, 3867),
    ("H200", "Mixtral 8x7B", 64, 2, 128, 605),
    ("H200", "Mixtral 8x7B", 64, 2, 2048, 1821),
    ("H200", "LLaMA 7B", 64, 1, 128, 2391),
    ("H200", "LLaMA 7B", 56, 1, 2048, 3522),
    ("H200", "LLaMA 70B", 64, 1, 128, 418),
    ("H200", "LLaMA 70B", 64, 1, 2048, 1458),
    ("H200", "Falcon 180B", 64, 4, 128, 118),
    ("H200", "Falcon 180B", 64, 4, 2048, 265),
    ("H100", "GPT-J 6B", 64, 1, 128, 2570),
    ("H100", "GPT-J 6B", 64, 1, 2048, 3212),
    ("H100", "Mistral 7B", 84, 1, 128, 2405),
    ("H100", "Mistral 7B", 56, 1, 2048, 3731),
    ("H100", "Mixtral 8x7B", 64, 2, 128, 588),
    ("H100", "Mixtral 8x7B", 32, 2, 2048, 1317),
    ("H100", "LLaMA 7B", 84, 1, 128, 2163),
    ("H100", "LLaMA 7B", 56, 1, 2048, 2826),
    ("H100", "LLaMA 70B", 96, 2, 128, 346),
    ("H100", "LLaMA 70B", 64, 2, 2048, 1011),
    ("H100", "Falcon 180B", 64, 4, 128, 112),
    ("H100", "Falcon 180B", 64, 4, 2048, 246),
    ("L40S", "GPT-J 6B", 32, 1, 128, 684),
    ("L40S", "GPT-J 6B", 32, 1, 2048, 768),
    ("L40S", "Mistral 7B", 84, 1, 128, 971),
    ("L40S", "Mistral 7B", 56, 1, 2048, 1721),
    ("L40S", "Mixtral 8x7B", 64, 4, 128, 155),
    ("L40S", "Mixtral 8x7B", 32, 4, 2048, 412),
    ("L40S", "LLaMA 7B", 32, 1, 128, 574),
    ("L40S", "LLaMA 7B", 16, 1, 2048, 537),
    ("L40S", "LLaMA 70B", 16, 2, 128, 49),
    ("L40S", "LLaMA 70B", 64, 4, 2048, 185),
    ("L40S", "Falcon 180B", 32, 8, 128, 15),
    ("L40S", "Falcon 180B", 32, 8, 2048, 52),
    ("A100-80GB", "GPT-J 6B", 32, 1, 128, 545),
    ("A100-80GB", "GPT-J 6B", 32, 1, 2048, 815),
    ("A100-80GB", "Mistral 7B", 64, 1, 128, 698),
    ("A100-80GB", "Mistral 7B", 56, 1, 2048, 1576),
    ("A100-80GB", "Mixtral 8x7B", 64, 2, 128, 319),
    ("A100-80GB", "Mixtral 8x7B", 32, 2, 2048, 801),
    ("A100-80GB", "LLaMA 7B", 32, 1, 128, 533),
    ("A100-80GB", "LLaMA 7B", 16, 1, 2048, 603),
    ("A100-80GB", "LLaMA 70B", 96, 4, 128, 80),
    ("A100-80GB", "LLaMA 70B", 64, 4, 2048, 289),
    ("A100-80GB", "Falcon 180B", 64, 8, 128, 29),
    ("A100-80GB", "Falcon 180B", 64, 8, 2048, 93),
)


class RatesError(BrokerError):
    """No measured serving rates for a GPU model and LLM, or rates that cannot be used."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ServingRates:
    """One replica's serving model: per-stream token rates, slots and GPUs."""

    gpu_model: str
    prefill_tok_s: float  # prompt tokens per second, per stream
    decode_tok_s: float  # generated tokens per second, per stream
    max_batch: int  # requests served at once by one replica
    gpus_per_replica: int
    source: str

    def __post_init__(self) -> None:
        if min(self.prefill_tok_s, self.decode_tok_s) <= 0:
            raise RatesError("prefill and decode rates must be > 0")
        if min(self.max_batch, self.gpus_per_replica) < 1:
            raise RatesError("max_batch and gpus_per_replica must be ≥ 1")

    def service_s(self, *, context_tokens: int, generated_tokens: int) -> float:
        """Seconds one request holds a slot: its prefill, then its decode."""
        return context_tokens / self.prefill_tok_s + generated_tokens / self.decode_tok_s


def known() -> list[tuple[str, str]]:
    """(GPU model, LLM) pairs with measured rows."""
    return sorted({(g, m) for g, m, *_ in _ROWS})


def measured_rates(*, gpu_model: str, llm: str = DEFAULT_LLM) -> ServingRates:
    """The rates solved from the two TensorRT-LLM rows of `gpu_model` and `llm`."""
    rows = {
        out: (batch, tp, thr) for g, m, batch, tp, out, thr in _ROWS if (g, m) == (gpu_model, llm)
    }
    if len(rows) != 2:
        pairs = "; ".join(f"{g} {m}" for g, m in known())
        raise RatesError(
            f"no measured serving rates for {gpu_model} with {llm}: give --prefill-rate, "
            f"--decode-rate, --max-batch and --gpus-per-replica, or use one of: {pairs}"
        )
    (b_short, tp_short, thr_short), (b_long, tp_long, thr_long) = rows[128], rows[2048]
    if tp_short != tp_long:
        raise RatesError(
            f"{gpu_model} {llm}: the measured rows use different tensor parallelism "
            f"({tp_short} and {tp_long}), so one replica shape cannot be derived"
        )
    t_short = b_short * 128 / (thr_short * tp_short)  # seconds one stream spends per request
    t_long = b_long * 2048 / (thr_long * tp_long)
    decode = (2048 - 128) / (t_long - t_short)
    prefill = _PROMPT / (t_short - 128 / decode)
    return ServingRates(
        gpu_model=gpu_model,
        prefill_tok_s=prefill,
        decode_tok_s=decode,
        max_batch=min(b_short, b_long),
        gpus_per_replica=tp_short,
        source=f"{SOURCE}: {llm} on {gpu_model}",
    )
