"""Chunked training data: sources of ``(X_chunk, y_chunk)`` pairs for data larger than memory.

``fg.fit`` and the scikit-learn estimators' ``fit``/``partial_fit`` accept, besides arrays:

- a list or tuple of ``(X_chunk, y_chunk)`` pairs, or any other iterable of them (a
  generator reads once: one epoch);
- a Dask array (``X`` and ``y`` Dask arrays or ``y`` a NumPy array), one chunk per block
  of rows, each block computed when it is visited;
- :func:`from_npy`: ``.npy`` files read a chunk at a time, each chunk a map of its own
  rows (the whole file is never mapped, so resident memory stays a few chunks);
- :func:`from_arrays`: arrays (a ``np.load(..., mmap_mode="r")`` memory map too) cut into
  chunks of views.

A source whose chunks can be read in any order (every one above except a general iterable)
is visited in a new keyed order each epoch when shuffling; :mod:`fastgd.session` says what
the chunked shuffle means statistically.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterable, Iterator, Sequence

import numpy as np

from .kernels.permutation import permutation


class Chunks:
    """A source of ``(X_chunk, y_chunk)`` pairs. ``n_chunks`` is their number when known
    (then :meth:`chunk` reads any one of them and epochs can visit them in any order);
    ``reiterable`` is False for a one-shot iterator (a generator)."""

    n_chunks: int | None = None
    reiterable: bool = True

    def chunk(self, i: int) -> tuple:
        """The ``i``-th pair (sources with ``n_chunks``)."""
        raise NotImplementedError

    def __iter__(self) -> Iterator[tuple]:
        return (self.chunk(i) for i in range(self.n_chunks))

    def visit(self, seed: int, epoch: int, shuffle: bool) -> Iterator[tuple[int, tuple]]:
        """``(chunk index, pair)`` in the order epoch ``epoch`` visits them: a keyed
        permutation of the chunks (``permutation(seed, epoch, n_chunks)``, independent of
        the rows' keys) when ``shuffle`` and the source is indexable, else stored order."""
        if shuffle and self.n_chunks and self.n_chunks > 1:
            for i in permutation(seed ^ CHUNK_ORDER_SALT, epoch, self.n_chunks):
                yield int(i), self.chunk(int(i))
        else:
            yield from enumerate(self)


#: Mixed into the seed of the chunk-order permutation, so that it is not the permutation the
#: rows of an epoch with as many rows would get.
CHUNK_ORDER_SALT = 0x5DEECE66D


class ArrayChunks(Chunks):
    """``X`` and ``y`` (arrays, memory maps included) cut into chunks of ``chunk_rows`` rows:
    views, no copies."""

    def __init__(self, X, y, chunk_rows: int):
        if len(X) != len(y):
            raise ValueError(f"X has {len(X)} rows but y has {len(y)}")
        self.X, self.y, self.rows = X, y, _positive("chunk_rows", chunk_rows)
        self.n_chunks = -(-len(X) // self.rows)

    def chunk(self, i):
        """Rows ``i * chunk_rows`` onwards, as views."""
        a = i * self.rows
        return self.X[a:a + self.rows], self.y[a:a + self.rows]


class SequenceChunks(Chunks):
    """A list or tuple of ``(X_chunk, y_chunk)`` pairs."""

    def __init__(self, pairs: Sequence):
        self.pairs, self.n_chunks = pairs, len(pairs)

    def chunk(self, i):
        """The ``i``-th pair, checked to be one."""
        return _pair(self.pairs[i], i)


class IterableChunks(Chunks):
    """Any iterable of pairs, read in its own order. A one-shot iterator (``iter(it) is
    it``, a generator) can be read once: one epoch."""

    def __init__(self, pairs: Iterable):
        self.pairs = pairs
        self.reiterable = iter(pairs) is not pairs
        self.read = False

    def __iter__(self):
        if self.read and not self.reiterable:
            raise ValueError("this iterable of chunks is a one-shot iterator (a generator) "
                             "and was read already: pass a list or an object whose __iter__ "
                             "starts again")
        self.read = True
        return (_pair(p, i) for i, p in enumerate(self.pairs))


class NpyChunks(Chunks):
    """A C-ordered 2-D ``.npy`` file of features (and targets: a ``.npy`` file or an array)
    read ``chunk_rows`` rows at a time, each chunk a read-only memory map of its own rows
    only (``np.memmap`` at the chunk's offset): nothing else of the file is mapped, so only
    the chunks in use are resident, and a chunk is read from the page cache without a copy
    (a plain ``read()`` into a new array ran at a third of the in-memory speed here)."""

    def __init__(self, X_path, y, chunk_rows: int):
        self.X = _NpyFile(X_path)
        if self.X.ndim != 2:
            raise ValueError(f"{X_path} holds a {self.X.ndim}-D array; features must be 2-D")
        self.y = _NpyFile(y) if isinstance(y, (str, os.PathLike)) else np.asarray(y)
        if self.y.shape[0] != self.X.shape[0]:
            raise ValueError(f"{X_path} has {self.X.shape[0]} rows but y has "
                             f"{self.y.shape[0]}")
        self.rows = _positive("chunk_rows", chunk_rows)
        self.n_chunks = -(-self.X.shape[0] // self.rows)

    def chunk(self, i):
        """Rows ``i * chunk_rows`` onwards, read from the files."""
        a = i * self.rows
        b = min(a + self.rows, self.X.shape[0])
        y = self.y.read(a, b) if isinstance(self.y, _NpyFile) else self.y[a:b]
        return self.X.read(a, b), y


class DaskChunks(Chunks):
    """Dask arrays, one chunk per block of rows (columns in one block), each computed when
    visited; ``y`` (a Dask or NumPy array) is cut at ``X``'s row boundaries."""

    def __init__(self, X, y):
        if X.ndim != 2:
            raise ValueError(f"X must be 2-D (n_samples, n_features); got shape {X.shape}")
        if len(X.chunks[1]) > 1:
            X = X.rechunk({1: -1})  # a chunk holds whole rows
        bounds = np.concatenate([[0], np.cumsum(X.chunks[0])])
        if y is None or y.shape[0] != X.shape[0]:
            raise ValueError(f"y must have X's {X.shape[0]} rows; got "
                             f"{None if y is None else y.shape[0]}")
        self.X, self.y, self.bounds = X, y, bounds
        self.n_chunks = len(X.chunks[0])

    def chunk(self, i):
        """Block ``i`` of ``X`` and the matching rows of ``y``, computed together."""
        import dask

        a, b = int(self.bounds[i]), int(self.bounds[i + 1])
        return dask.compute(self.X.blocks[i, 0], self.y[a:b])


class MappedTargets(Chunks):
    """Another source with ``fn`` applied to every target chunk (a classifier's labels to
    class ids)."""

    def __init__(self, source: Chunks, fn):
        self.source, self.fn = source, fn
        self.n_chunks, self.reiterable = source.n_chunks, source.reiterable

    def chunk(self, i):
        """The source's ``i``-th pair, targets mapped."""
        X, y = self.source.chunk(i)
        return X, self.fn(y)

    def __iter__(self):
        return ((X, self.fn(y)) for X, y in self.source)


def peek(source: Chunks) -> tuple[tuple, tuple]:
    """The shapes of a source's first ``X`` and ``y`` chunks (a Dask source's widths come
    from its metadata; a one-shot iterator keeps the chunk it read for its first epoch)."""
    if isinstance(source, MappedTargets):
        return peek(source.source)
    if isinstance(source, DaskChunks):
        return source.X.shape, source.y.shape
    if isinstance(source, IterableChunks):
        it = iter(source.pairs)
        first = next(it, None)
        if first is None:
            raise ValueError("the chunked data gave no chunks")
        if not source.reiterable:  # put the chunk back in front of the rest
            source.pairs, source.read = itertools.chain([first], it), False
        X, y = _pair(first, 0)
    else:
        if not source.n_chunks:
            raise ValueError("the chunked data has no chunks")
        X, y = source.chunk(0)
    return np.shape(X), np.shape(y)


def n_features(source: Chunks) -> int:
    """The width of a source's rows (:func:`peek`)."""
    shape = peek(source)[0]
    if len(shape) != 2:
        raise ValueError(f"chunk 0's X must be 2-D (n_samples, n_features); got shape {shape}")
    return int(shape[1])


def targets(source: Chunks) -> np.ndarray:
    """Every target of a source, concatenated (a classifier's labels): a Dask ``y`` is
    computed alone, other sources are read once (a one-shot iterator cannot be)."""
    if isinstance(source, DaskChunks):
        return np.asarray(source.y.compute() if is_dask(source.y) else source.y)
    if isinstance(source, NpyChunks):
        y = source.y
        return y.read(0, y.shape[0]) if isinstance(y, _NpyFile) else np.asarray(y)
    if not source.reiterable:
        raise ValueError("finding the classes would read a one-shot iterator of chunks: "
                         "call partial_fit with classes=, or pass a list or re-iterable")
    parts = [np.asarray(y) for _, y in source]
    if not parts:
        raise ValueError("the chunked data gave no chunks")
    return np.concatenate(parts)


def from_npy(X_path, y, chunk_rows: int = 65536) -> NpyChunks:
    """Stream the 2-D ``.npy`` file at ``X_path`` (targets: a ``.npy`` path or an array)
    ``chunk_rows`` rows at a time, mapping one chunk's rows at a time."""
    return NpyChunks(X_path, y, chunk_rows)


def from_arrays(X, y, chunk_rows: int = 65536) -> ArrayChunks:
    """Stream arrays (a memory map included) in chunks of ``chunk_rows`` rows (views)."""
    return ArrayChunks(X, y, chunk_rows)


def is_dask(a) -> bool:
    """Whether ``a`` is a Dask collection (without importing Dask)."""
    return hasattr(a, "__dask_graph__") and type(a).__module__.startswith("dask")


def as_chunks(X, y) -> Chunks | None:
    """The chunk source ``X`` (and ``y``) describe, or None for in-memory data: a
    :class:`Chunks`, a Dask array, or, with ``y=None``, a list/tuple/iterable of pairs."""
    if isinstance(X, Chunks):
        if y is not None:
            raise ValueError("a chunk source carries its own targets: pass y=None")
        return X
    if is_dask(X):
        if is_dask(y) and y.ndim >= 1:
            y = y.rechunk({0: X.chunks[0]}) if len(X.chunks) else y
        return DaskChunks(X, y)
    if y is not None or isinstance(X, (np.ndarray, str, bytes)):
        return None
    if isinstance(X, (list, tuple)):
        return SequenceChunks(X)
    if isinstance(X, Iterable):
        return IterableChunks(X)
    return None


# ----------------------------------------------------------------------------- helpers
def _pair(p, i: int) -> tuple:
    if not (isinstance(p, (tuple, list)) and len(p) == 2):
        raise ValueError(f"chunk {i} is a {type(p).__name__}; chunked data must be "
                         "(X_chunk, y_chunk) pairs (or pass y= for in-memory data)")
    return p[0], p[1]


def _positive(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1; got {value!r}")
    return int(value)


class _NpyFile:
    """The header of a ``.npy`` file and row-range reads of it."""

    def __init__(self, path):
        self.path = os.fspath(path)
        with open(self.path, "rb") as f:
            version = np.lib.format.read_magic(f)
            read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                           else np.lib.format.read_array_header_2_0)
            shape, fortran, dtype = read_header(f)
            self.offset = f.tell()
        if fortran and len(shape) > 1:
            raise ValueError(f"{self.path} is Fortran-ordered; save it C-ordered to stream "
                             "rows")
        if dtype.hasobject:
            raise ValueError(f"{self.path} holds Python objects; it cannot be streamed")
        self.shape, self.dtype, self.ndim = tuple(shape), dtype, len(shape)
        self.row_bytes = int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize

    def read(self, a: int, b: int) -> np.ndarray:
        """Rows ``a .. b``: a read-only map of just those rows (unmapped when dropped)."""
        return np.memmap(self.path, self.dtype, mode="r",
                         offset=self.offset + a * self.row_bytes,
                         shape=(b - a, *self.shape[1:]))
