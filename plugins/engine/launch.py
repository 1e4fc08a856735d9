"""``launch`` for every device: fast-reid's workers for CUDA (NCCL), a CPU path on gloo, and a
launcher that loses nothing to a signal.

fast-reid's ``launch`` asserts CUDA in each worker and initialises NCCL, so
``--num-gpus 2 MODEL.DEVICE cpu`` cannot start there. The CPU path spawns the same number of
processes with the gloo backend and sets up fast-reid's local process group the same way, so
``fastreid.utils.comm``, DDP and the samplers' sharding work unchanged.

Signals: with several processes, SIGINT / SIGTERM to the launcher are passed on to every worker
(each runs in its own process group, so that a terminal's Ctrl-C reaches it once, through the
launcher, and not a second time directly, which would mean "stop at once without saving").
The launcher then waits until every worker has saved ``model_interrupted.pth`` and stopped, and
raises ``TrainingInterrupted``: exit status 130 / 143, as a one-process run. A container stop
(SIGTERM, then SIGKILL to whatever is left) therefore finds the checkpoint written. A worker that
fails stops the others (SIGTERM, SIGKILL after a grace period) and its error is raised, as
``torch.multiprocessing.spawn`` does.
"""

import contextlib
import logging
import multiprocessing.connection
import os
import pickle
import signal
import socket
import sys
import threading

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from fastreid.engine.launch import _distributed_worker as _nccl_worker
from fastreid.utils import comm

from .checkpoint import TrainingInterrupted

__all__ = ["launch"]

FORWARDED = (signal.SIGINT, signal.SIGTERM)
# Seconds a failed run's other workers get to stop on SIGTERM before SIGKILL (torch's spawn's).
GRACE_S = 30.0


def _free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch(
    main_func, num_processes, num_machines=1, machine_rank=0, dist_url=None, args=(), device="cuda"
):
    """Run ``main_func(*args)`` in ``num_processes`` processes per machine (one: in this one).

    Args:
        device: "cuda" (fast-reid's worker, one NCCL process per GPU) or "cpu" (gloo).
        Others as ``fastreid.engine.launch``; ``dist_url`` "auto" picks a free local port.
    Raises:
        TrainingInterrupted: a signal stopped the workers (after they saved their checkpoint).
    """
    world_size = num_machines * num_processes
    if world_size == 1:
        return main_func(*args)
    if dist_url in (None, "auto"):
        if num_machines > 1:
            raise ValueError("--dist-url auto works on one machine; give tcp://HOST:PORT")
        dist_url = f"tcp://127.0.0.1:{_free_port()}"
    worker = _gloo_worker if device == "cpu" else _nccl_worker
    run_workers(
        worker, num_processes, (main_func, world_size, num_processes, machine_rank, dist_url, args)
    )


def _gloo_worker(local_rank, main_func, world_size, num_processes, machine_rank, dist_url, args):
    rank = machine_rank * num_processes + local_rank
    if "OMP_NUM_THREADS" not in os.environ:
        # Each process would otherwise start one thread per core: N processes oversubscribe.
        torch.set_num_threads(max(1, torch.get_num_threads() // num_processes))
    dist.init_process_group("gloo", init_method=dist_url, world_size=world_size, rank=rank)
    comm.synchronize()
    for i in range(world_size // num_processes):
        group = dist.new_group(list(range(i * num_processes, (i + 1) * num_processes)))
        if i == machine_rank:
            comm._LOCAL_PROCESS_GROUP = group
    try:
        main_func(*args)
    finally:
        dist.destroy_process_group()


def _interrupt_code(signum):
    return 128 + int(signum)


def _worker(local_rank, target, target_args):
    """One worker: ``target(local_rank, *target_args)`` in its own process group; a training
    stopped by a signal exits with 128 + signal (torch's spawn would report a plain 0)."""
    with contextlib.suppress(OSError):
        os.setpgid(0, 0)
    try:
        target(local_rank, *target_args)
    except TrainingInterrupted as e:  # the checkpoint is saved and the stop logged
        # Leave without finalizing the interpreter: nothing is left to save, and the C++
        # teardown of the distributed objects (reducer, gloo contexts, store) in module-cleanup
        # order may be where a stopped worker aborted ("terminate called without an active
        # exception": one full test run in four, one run of the signal test in 42 alone).
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(e.exit_code)
    except KeyboardInterrupt:  # a second signal: stopped at once, without saving
        sys.exit(_interrupt_code(signal.SIGINT))


class _SignalForwarder:
    """While active (main thread only), passes SIGINT / SIGTERM on to the live workers."""

    def __init__(self):
        self.processes = []
        self.received = []
        self._previous = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for s in FORWARDED:
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc):
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous = {}
        return False

    def _handle(self, signum, frame):
        self.received.append(signum)
        name = signal.Signals(signum).name
        alive = self.forward(signum)
        if len(self.received) == 1:
            note = (
                f"Received {name}: passed on to the {alive} training processes; waiting for them "
                f"to save a checkpoint and stop (send {name} again to stop them at once, without "
                "saving).\n"
            )
        else:
            note = f"Received {name} again: passed on; the processes stop without saving.\n"
        # os.write: a print could re-enter a write the signal interrupted.
        with contextlib.suppress(OSError):
            os.write(sys.stderr.fileno(), note.encode())

    def forward(self, signum):
        """Send ``signum`` to every live worker; returns how many got it."""
        sent = 0
        for process in self.processes:
            if process.exitcode is None and process.pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signum)
                    sent += 1
        return sent


def run_workers(target, nprocs, target_args):
    """Spawn ``nprocs`` workers running ``target(local_rank, *target_args)`` and wait for all.

    SIGINT / SIGTERM meanwhile are passed on to the workers (see the module docstring).

    Raises:
        TrainingInterrupted: a signal stopped the workers (the launcher's, or one sent to them).
        torch.multiprocessing.ProcessRaisedException / ProcessExitedException: a worker failed.
    """
    with _SignalForwarder() as forwarder:
        context = mp.start_processes(
            _worker, args=(target, target_args), nprocs=nprocs, join=False, start_method="spawn"
        )
        forwarder.processes = context.processes
        for signum in forwarder.received:  # arrived while the workers were being started
            forwarder.forward(signum)
        failed = _wait(context.processes, forwarder)
    if failed is not None:
        _raise_failure(context, failed)
    interrupted = _interrupt_signal(context.processes, forwarder.received)
    if interrupted is not None:
        name = signal.Signals(interrupted).name
        message = (
            f"{name}: all {nprocs} training processes have stopped (their log names the "
            "checkpoint saved and how to continue)."
        )
        print(message, file=sys.stderr, flush=True)
        raise TrainingInterrupted(interrupted, message)


def _stopped_by(code, received):
    """Whether a worker's exit code is a stop on a signal rather than a failure."""
    codes = {_interrupt_code(s) for s in FORWARDED}
    # Killed by a signal the launcher passed on (a worker not training yet has no handler).
    return code in codes or (code is not None and code < 0 and -code in received)


def _wait(processes, forwarder):
    """Wait for every worker; on the first failure stop the others. Returns its index or None."""
    pending = {p.sentinel: i for i, p in enumerate(processes)}
    while pending:
        for sentinel in multiprocessing.connection.wait(list(pending)):
            index = pending.pop(sentinel)
            process = processes[index]
            process.join()
            if process.exitcode != 0 and not _stopped_by(process.exitcode, forwarder.received):
                _stop(processes)
                return index
    return None


def _stop(processes):
    """SIGTERM to the live workers, SIGKILL to those still alive after ``GRACE_S``."""
    for process in processes:
        if process.is_alive():
            process.terminate()
    for process in processes:
        process.join(GRACE_S)
    for process in processes:
        if process.is_alive():
            process.kill()
        process.join()


def _raise_failure(context, index):
    """Raise what torch's spawn raises for a failed worker: its traceback, or its exit code."""
    process = context.processes[index]
    path = context.error_files[index]
    if os.access(path, os.R_OK):
        with open(path, "rb") as f:
            trace = pickle.load(f)
        raise mp.ProcessRaisedException(
            f"\n\n-- Process {index} terminated with the following error:\n{trace}",
            index,
            process.pid,
        )
    code = process.exitcode
    name = signal.Signals(-code).name if code < 0 else None
    what = f"signal {name}" if name else f"exit code {code}"
    raise mp.ProcessExitedException(
        f"process {index} terminated with {what}", index, process.pid, code, name
    )


def _interrupt_signal(processes, received):
    """The signal that stopped the run: the launcher's first, or a worker's; None if none did."""
    codes = [p.exitcode for p in processes]
    if all(code == 0 for code in codes):
        return None  # the signal came after the last iteration: training completed
    if received:
        return received[0]
    for code in codes:
        if code in {_interrupt_code(s) for s in FORWARDED}:
            return code - 128
    return None
