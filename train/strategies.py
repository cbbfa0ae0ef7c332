"""tf.distribute strategies, mixed precision and XLA choices for the training loop.

    strategy = strategies.make_strategy("auto")    # TPU, else multi-worker (TF_CONFIG), else
                                                   # several GPUs, else one device
    policy = strategies.precision_policy("auto", strategy)   # 'mixed_bfloat16' on BF16 CPUs
    jit = strategies.use_xla("auto", strategy)               # False on CPU

Multi-worker training needs `TF_CONFIG` set in every worker process, and the strategy must be
made before any other TensorFlow op runs (`train.loop.train` makes it first).
"""

import json
import os

import tensorflow as tf
from absl import logging

from train.recipes import PRECISIONS, STRATEGIES, XLA


def make_deterministic(enabled: bool) -> bool:
    """Makes this process's training bitwise reproducible; returns whether it is.

    TensorFlow op determinism, and one inter-op thread: with several, the graph executor may
    run independent ops of a step concurrently, and sums that depend on their order can then
    differ in the last bits between runs. All cores still work on each op (intra-op threads);
    benchmarks/bench_training.py measures the step with it. Must run before TensorFlow's
    runtime starts (before any op or device query); later it logs a warning and returns False
    unless the process already has one inter-op thread (TF_NUM_INTEROP_THREADS=1).
    """
    if not enabled:
        return False
    tf.config.experimental.enable_op_determinism()
    try:
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:
        if tf.config.threading.get_inter_op_parallelism_threads() != 1 and \
                os.environ.get("TF_NUM_INTEROP_THREADS") != "1":
            logging.warning(
                "deterministic=True, but TensorFlow started before train() could give it one "
                "inter-op thread: two runs may differ in the last bits. Call train() before "
                "other TensorFlow work in the process, or set TF_NUM_INTEROP_THREADS=1.")
            return False
    return True


def cpu_features() -> str:
    """The CPU's model name and its vector/matrix instruction sets, e.g. 'AMD EPYC (avx2 fma
    avx512f avx512_vnni avx512_bf16)': speed figures name what they ran on."""
    try:
        with open("/proc/cpuinfo") as f:
            info = f.read()
    except OSError:
        return "unknown CPU"
    model = next((line.split(":", 1)[1].strip() for line in info.splitlines()
                  if line.startswith("model name")), "unknown CPU")
    flags = next((line.split(":", 1)[1].split() for line in info.splitlines()
                  if line.startswith("flags")), [])
    wanted = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8")
    return f"{model} ({' '.join(f for f in wanted if f in flags) or 'no AVX2'})"


def resolve(strategy):
    """A `tf.distribute.Strategy` from None ('auto'), a name, or a strategy."""
    if strategy is None:
        return make_strategy("auto")
    if isinstance(strategy, str):
        return make_strategy(strategy)
    if isinstance(strategy, tf.distribute.Strategy):
        return strategy
    raise ValueError(f"strategy must be None, a name {STRATEGIES} or a tf.distribute.Strategy; "
                     f"got {strategy!r}.")


def split_cpu(n: int) -> None:
    """Splits the physical CPU into `n` logical devices (/cpu:0 .. /cpu:n-1), so that
    MirroredStrategy runs `n` replicas on one machine (a stand-in for several GPUs or workers).
    Call before TensorFlow initializes its devices (before any op runs)."""
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(n)]
    )


def tf_config_workers() -> int:
    """Number of tasks (chief + workers) in the TF_CONFIG cluster, 0 without TF_CONFIG."""
    text = os.environ.get("TF_CONFIG")
    if not text:
        return 0
    try:
        cluster = json.loads(text).get("cluster", {})
    except json.JSONDecodeError as e:
        raise ValueError(f"TF_CONFIG is not valid JSON ({e}): {text!r}") from None
    return len(cluster.get("chief", [])) + len(cluster.get("worker", []))


def _tpu_present() -> bool:
    """A cheap look for a TPU (Colab/Cloud TPU env vars, TPU VM device files)."""
    if os.environ.get("TPU_NAME") or os.environ.get("COLAB_TPU_ADDR"):
        return True
    return os.path.exists("/dev/accel0") or os.path.exists("/dev/vfio/0")


def _make_tpu(tpu: str | None) -> tf.distribute.Strategy:
    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu or "")
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
    except (ValueError, tf.errors.OpError) as e:
        raise ValueError(
            f"strategy 'tpu' found no TPU ({e}). On Colab pick a TPU runtime; on Cloud TPU "
            "set TPU_NAME or pass tpu=...; else use strategy='auto'."
        ) from None
    return tf.distribute.TPUStrategy(resolver)


def make_strategy(name: str = "auto", *, devices=None, tpu: str | None = None):
    """Returns a `tf.distribute.Strategy`.

    name: 'auto' (a TPU if one is attached, else MultiWorkerMirroredStrategy when TF_CONFIG
        names more than one task, else MirroredStrategy over several GPUs, else one device),
        'one_device' (GPU:0, else CPU:0), 'mirrored' (all GPUs, else all logical CPUs: see
        `split_cpu`), 'multi_worker' (needs TF_CONFIG), 'tpu'.
    devices: explicit device list for 'mirrored'.
    tpu: TPU name or address for 'tpu' (default: TPU_NAME / the local TPU).
    """
    if name not in STRATEGIES:
        raise ValueError(f"unknown strategy {name!r}: use one of {STRATEGIES}.")
    if name == "auto":
        if _tpu_present():
            try:
                return _make_tpu(tpu)
            except ValueError as e:
                logging.warning("A TPU seemed present but could not be used: %s", e)
        if tf_config_workers() > 1:
            name = "multi_worker"
        elif len(tf.config.list_physical_devices("GPU")) > 1:
            name = "mirrored"
        else:
            name = "one_device"
    if name == "tpu":
        return _make_tpu(tpu)
    if name == "multi_worker":
        if not os.environ.get("TF_CONFIG"):
            raise ValueError(
                "strategy 'multi_worker' needs TF_CONFIG in every worker, e.g. "
                '{"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
                '"task": {"type": "worker", "index": 0}}.'
            )
        return tf.distribute.MultiWorkerMirroredStrategy()
    gpus = tf.config.list_logical_devices("GPU")
    if name == "one_device":
        return tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else "/cpu:0")
    if devices is None and not gpus:
        devices = [d.name for d in tf.config.list_logical_devices("CPU")]
    return tf.distribute.MirroredStrategy(devices=devices)


def device_kind(strategy) -> str:
    """'tpu', 'gpu' or 'cpu': what the strategy's replicas run on."""
    if isinstance(strategy, tf.distribute.TPUStrategy):
        return "tpu"
    devices = getattr(strategy.extended, "worker_devices", None) or ()
    if any("GPU" in d.upper() for d in devices):
        return "gpu"
    if not devices and tf.config.list_logical_devices("GPU"):
        return "gpu"
    return "cpu"


def describe(strategy) -> str:
    """'MirroredStrategy, 2 replicas on cpu' and the like, for logs and summaries."""
    workers = tf_config_workers() if isinstance(
        strategy, tf.distribute.MultiWorkerMirroredStrategy) else 1
    where = f"{workers} workers, " if workers > 1 else ""
    return (f"{type(strategy).__name__}, {where}{strategy.num_replicas_in_sync} replica(s) "
            f"on {device_kind(strategy)}")


def is_chief(strategy) -> bool:
    """Whether this process writes the run directory (False on non-chief workers)."""
    return bool(strategy.extended.should_checkpoint)


def cpu_supports_bf16() -> bool:
    """Whether this CPU has native bfloat16 arithmetic (AVX512-BF16 or AMX-BF16)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def _gpu_compute_capability() -> tuple:
    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        return (0, 0)
    details = tf.config.experimental.get_device_details(gpus[0])
    return tuple(details.get("compute_capability", (0, 0)))


def precision_policy(setting: str, strategy) -> str:
    """The Keras dtype policy for recipe field `mixed_precision`.

    'off'/'float32' -> 'float32'; 'auto' -> 'mixed_bfloat16' on TPU and on CPUs with bfloat16
    arithmetic, 'mixed_float16' on GPUs with tensor cores (compute capability >= 7.0),
    else 'float32'; 'mixed_float16' / 'mixed_bfloat16' as given.
    """
    if setting in ("off", "float32"):
        return "float32"
    if setting in ("mixed_float16", "mixed_bfloat16"):
        return setting
    if setting != "auto":
        raise ValueError(f"mixed_precision {setting!r} is not one of {PRECISIONS}.")
    kind = device_kind(strategy)
    if kind == "tpu":
        return "mixed_bfloat16"
    if kind == "gpu":
        return "mixed_float16" if _gpu_compute_capability() >= (7, 0) else "float32"
    return "mixed_bfloat16" if cpu_supports_bf16() else "float32"


def use_xla(setting: str, strategy) -> bool:
    """Whether to compile the train step with XLA, for recipe field `xla`.

    'auto': on GPU and TPU (TPU compiles anyway); off on CPU, where XLA is slower for these
    models. 'on' with several CPU replicas raises: XLA does not run collectives across
    logical CPU devices.
    """
    if setting not in XLA:
        raise ValueError(f"xla {setting!r} is not one of {XLA}.")
    kind = device_kind(strategy)
    if setting == "auto":
        return kind in ("gpu", "tpu")
    if setting == "on" and kind == "cpu" and strategy.num_replicas_in_sync > 1:
        raise ValueError(
            f"xla='on' fails under {describe(strategy)}: XLA cannot run the cross-replica "
            "collectives on CPU devices. Use xla='off' (or 'auto') here; XLA is for GPU/TPU."
        )
    return setting == "on"
