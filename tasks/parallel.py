"""Scale-out helpers on Lightning's own engines (no home-made distribution).

- Data parallel: ``--trainer.strategy ddp --trainer.devices N`` (``--trainer.accelerator cpu``
  runs it on CPU processes over gloo). Multi-node: ``--trainer.num_nodes M`` under ``torchrun``
  or SLURM (``srun``), which Lightning detects from their environment variables.
- Fully sharded (FSDP2): ``--trainer.strategy lightning.pytorch.strategies.ModelParallelStrategy``.
  Lightning builds a device mesh and calls ``configure_model``; ``TaskModule.configure_model``
  then shards every transformer block, and the rest of the model, with ``fully_shard`` over the
  mesh's data-parallel dimension (works on CPU over gloo as well as on GPUs). Set
  ``--trainer.strategy.data_parallel_size N --trainer.strategy.tensor_parallel_size 1`` for FSDP
  alone: Lightning's "auto" makes each node's devices a tensor-parallel group (data parallel
  across nodes only), so on one node nothing would be sharded and every rank would see the
  same data.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from tzoo.core.blocks import TransformerBlock

__all__ = ["fully_shard_blocks"]


def fully_shard_blocks(module: nn.Module, mesh: Any) -> int:
    """``fully_shard`` each ``TransformerBlock`` inside ``module`` (one all-gather per block in the
    forward pass, so at most one block's full weights are materialised at a time), then each of
    ``module``'s direct children that holds parameters (embeddings, heads and everything left).
    Returns the number of blocks sharded."""
    from torch.distributed.fsdp import fully_shard

    blocks = [m for m in module.modules() if isinstance(m, TransformerBlock)]
    for block in blocks:
        fully_shard(block, mesh=mesh)
    for child in module.children():
        if any(True for _ in child.parameters()):
            fully_shard(child, mesh=mesh)
    return len(blocks)
