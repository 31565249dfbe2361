"""Checks of the tree structures in an estimator loaded from a skops file, before anyone calls it.

scikit-learn's tree code (``Tree.apply``, ``decision_path``, the histogram-boosting predictor) walks
node arrays without bounds checks: a crafted file with a child index out of range, a cycle, or a
feature index past the input's columns makes ``predict`` read or write outside its arrays. skops
checks only types, so modelfmt, which trusts ``Tree`` and ``TreePredictor`` by default
(:mod:`modelfmt.trust`), checks their contents here: the invariants every tree scikit-learn builds
satisfies, as scikit-learn PR 34558 proposes to check in ``__setstate__``.
"""

from __future__ import annotations

from typing import Any

from modelfmt.errors import UnsafeModelError

_LEAF = -1  # sklearn.tree._tree.TREE_LEAF
_BITSET_WORDS = 8  # 256 categories per feature, 32 bits a word


def check_trees(estimator: Any, source: str) -> None:
    """Refuse (:class:`UnsafeModelError`, naming ``source`` and the tree) an estimator whose trees are
    not well-formed; walks everything reachable from ``estimator``."""
    from sklearn.ensemble._hist_gradient_boosting.predictor import TreePredictor
    from sklearn.tree._tree import Tree

    for obj, owner, where in _walk(estimator):
        if isinstance(obj, Tree):
            n_features = getattr(owner, "n_features_in_", None) if owner is not None else None
            _check_tree(obj, n_features, f"{source}: {where}")
        elif isinstance(obj, TreePredictor):
            _check_predictor(obj, owner, f"{source}: {where}")


def _walk(root: Any) -> Any:
    """``(object, the object whose attribute holds it, a path)`` for everything reachable from ``root``."""
    import numpy as np

    seen: set[int] = set()
    stack: list[tuple[Any, Any, str]] = [(root, None, type(root).__name__)]
    while stack:
        obj, owner, where = stack.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        yield obj, owner, where
        if isinstance(obj, dict):
            stack.extend((v, owner, f"{where}[{k!r}]") for k, v in obj.items())
        elif isinstance(obj, (list, tuple, set, frozenset)):
            stack.extend((v, owner, f"{where}[{i}]") for i, v in enumerate(obj))
        elif isinstance(obj, np.ndarray):
            if obj.dtype == object:
                stack.extend((v, owner, f"{where}[{i}]") for i, v in enumerate(obj.ravel()))
        elif hasattr(obj, "__dict__") and not isinstance(obj, type):
            # Trees and predictors are checked against the estimator that holds them.
            stack.extend((v, obj, f"{where}.{k}") for k, v in vars(obj).items())


def _bad(where: str, why: str) -> UnsafeModelError:
    return UnsafeModelError(f"{where} is not a well-formed tree ({why}); the file is corrupt or was crafted")


def _check_tree(tree: Any, n_features: int | None, where: str) -> None:
    import numpy as np

    n = int(tree.node_count)
    # node_count is read from the file apart from the node array: check it before any view uses it.
    if not 1 <= n <= int(tree.capacity):
        raise _bad(where, f"node_count {n} with {int(tree.capacity)} node(s) stored")
    left, right, feature = tree.children_left, tree.children_right, tree.feature
    limit = int(tree.n_features) if n_features is None else min(int(tree.n_features), int(n_features))
    internal = left != _LEAF
    _check_children(np.arange(n), left, right, internal, n, where)
    if (right[~internal] != _LEAF).any():
        raise _bad(where, "a leaf with a right child")
    f = feature[internal]
    if f.size and (f.min() < 0 or f.max() >= limit):
        raise _bad(where, f"a split on feature {int(f.max() if f.max() >= limit else f.min())} of {limit}")
    # decision_path and apply on sparse input size their buffers by max_depth.
    depth, frontier = 0, np.array([0])
    while frontier.size:
        inner = frontier[internal[frontier]]
        if inner.size and depth >= int(tree.max_depth):
            raise _bad(where, f"deeper than its max_depth {int(tree.max_depth)}")
        frontier = np.concatenate([left[inner], right[inner]])
        depth += 1


def _check_children(idx: Any, left: Any, right: Any, internal: Any, n: int, where: str) -> None:
    """Children of internal nodes come after their parent (no cycles), are in range, one parent each."""
    import numpy as np

    i, lo, hi = idx[internal], left[internal].astype(np.int64), right[internal].astype(np.int64)
    if ((lo <= i) | (hi <= i) | (lo >= n) | (hi >= n)).any():
        raise _bad(where, "a child index out of range or before its parent")
    children = np.concatenate([lo, hi])
    if np.unique(children).size != children.size:
        raise _bad(where, "a node with two parents")


def _check_predictor(predictor: Any, owner: Any, where: str) -> None:
    import numpy as np
    from sklearn.ensemble._hist_gradient_boosting.common import PREDICTOR_RECORD_DTYPE

    nodes = predictor.nodes
    if not isinstance(nodes, np.ndarray) or nodes.dtype != PREDICTOR_RECORD_DTYPE or nodes.ndim != 1 or not len(nodes):
        raise _bad(where, "its nodes are not a non-empty array of scikit-learn's predictor records")
    n = len(nodes)
    internal = nodes["is_leaf"] == 0
    _check_children(np.arange(n), nodes["left"], nodes["right"], internal, n, where)
    f = nodes["feature_idx"][internal]
    n_features = getattr(owner, "n_features_in_", None)
    if n_features is None:
        raise _bad(where, "it is not held by a fitted HistGradientBoosting estimator")
    if f.size and (f.min() < 0 or f.max() >= int(n_features)):
        raise _bad(where, f"a split on a feature outside the {int(n_features)} inputs")
    categorical = internal & (nodes["is_categorical"] != 0)
    for name in ("raw_left_cat_bitsets", "binned_left_cat_bitsets"):
        bits = getattr(predictor, name, None)
        if not isinstance(bits, np.ndarray) or bits.ndim != 2 or bits.shape[1] != _BITSET_WORDS:
            raise _bad(where, f"{name} is not an (n, {_BITSET_WORDS}) array")
        if categorical.any() and int(nodes["bitset_idx"][categorical].max()) >= bits.shape[0]:
            raise _bad(where, f"a categorical split past the {bits.shape[0]} bitsets of {name}")
    if categorical.any():
        _check_known_categories(owner, nodes["feature_idx"][categorical], where)


def _check_known_categories(owner: Any, features: Any, where: str) -> None:
    """A categorical split reads the estimator's known-category bitset of its feature: it must have one."""
    mapper: Any = getattr(owner, "_bin_mapper", None)
    is_categorical = getattr(mapper, "is_categorical_", None)
    if is_categorical is None or len(is_categorical) <= int(features.max()) or not is_categorical[features].all():
        raise _bad(where, "a categorical split on a feature the estimator does not treat as categorical")
    known, f_idx_map = mapper.make_known_categories_bitsets()
    if known.ndim != 2 or known.shape[1] != _BITSET_WORDS or int(f_idx_map[features].max()) >= known.shape[0]:
        raise _bad(where, "a categorical split on a feature with no known categories")
