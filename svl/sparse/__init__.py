"""Sparse voxel engine: SparseTensor, voxelization, kernel maps, sparse convs, BN and pooling.

Everything is plain device-agnostic torch (CPU and CUDA); the optional spconv backend lives in
``svl.sparse.spconv_backend`` and is imported only on request.
"""

from svl.sparse.conv import (
    SparseBatchNorm,
    SparseConv3d,
    SparseInverseConv3d,
    SparseLinear,
    SubMConv3d,
    global_max_pool,
    global_mean_pool,
    sparse_conv_features,
)
from svl.sparse.kmap import KernelMap, kernel_offsets, strided_map, submanifold_map
from svl.sparse.tensor import SparseTensor, is_spike_train
from svl.sparse.voxelize import voxelize

__all__ = [
    "KernelMap",
    "SparseBatchNorm",
    "SparseConv3d",
    "SparseInverseConv3d",
    "SparseLinear",
    "SparseTensor",
    "SubMConv3d",
    "global_max_pool",
    "global_mean_pool",
    "is_spike_train",
    "kernel_offsets",
    "sparse_conv_features",
    "strided_map",
    "submanifold_map",
    "voxelize",
]
