"""``launch`` for every device: fast-reid's for CUDA (NCCL), and a CPU path on gloo.

fast-reid's ``launch`` asserts CUDA in each worker and initialises NCCL, so
``--num-gpus 2 MODEL.DEVICE cpu`` cannot start there. The CPU path spawns the same number of
processes with the gloo backend and sets up fast-reid's local process group the same way, so
``fastreid.utils.comm``, DDP and the samplers' sharding work unchanged.
"""

import os
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from fastreid.engine import launch as fastreid_launch
from fastreid.utils import comm

__all__ = ["launch"]


def _free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch(
    main_func, num_processes, num_machines=1, machine_rank=0, dist_url=None, args=(), device="cuda"
):
    """Run ``main_func(*args)`` in ``num_processes`` processes per machine (one: in this one).

    Args:
        device: "cuda" (fast-reid's launch, one NCCL process per GPU) or "cpu" (gloo).
        Others as ``fastreid.engine.launch``; ``dist_url`` "auto" picks a free local port.
    """
    world_size = num_machines * num_processes
    if device != "cpu" or world_size == 1:
        return fastreid_launch(main_func, num_processes, num_machines, machine_rank, dist_url, args)
    if dist_url in (None, "auto"):
        if num_machines > 1:
            raise ValueError("--dist-url auto works on one machine; give tcp://HOST:PORT")
        dist_url = f"tcp://127.0.0.1:{_free_port()}"
    mp.spawn(
        _gloo_worker,
        nprocs=num_processes,
        args=(main_func, world_size, num_processes, machine_rank, dist_url, args),
        daemon=False,
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
