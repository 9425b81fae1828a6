"""Nearest-neighbour retrieval in representation space (DIM App. A.4, Fig. 8).

Fig. 8: "Nearest-neighbor using the L1 distance on the encoded ... images.  The
images on the far left are randomly-selected reference images (query) from the
training set and the four images their nearest-neighbor from the test set as
measured in the representation, sorted by proximity."  L1 "to reflect the
uniform prior".  (The App. A.4 text draws the queries from the test set; this
module follows the figure's caption, and `query_indices` works on any split.)
"""

import os

import numpy as np
from sklearn.neighbors import NearestNeighbors

from dim_keras import figures


def nearest_neighbours(query_features, gallery_features, k=4, metric="l1"):
    """The ``k`` gallery items closest to each query, sorted by distance.

    Returns:
        ``(indices [Q, k], distances [Q, k])``, closest first.
    """
    query_features = np.asarray(query_features, np.float32)
    gallery_features = np.asarray(gallery_features, np.float32)
    if query_features.ndim != 2 or gallery_features.ndim != 2:
        raise ValueError("query and gallery features must be [N, D]")
    if query_features.shape[1] != gallery_features.shape[1]:
        raise ValueError("query and gallery features differ in width")
    if not 1 <= k <= len(gallery_features):
        raise ValueError(f"k must be in 1..{len(gallery_features)}, got {k}")
    index = NearestNeighbors(n_neighbors=k, metric=metric).fit(gallery_features)
    distances, indices = index.kneighbors(query_features)
    return indices, distances


def query_indices(labels, count=10, seed=0):
    """One random index per class (sorted by class), as in Fig. 8.

    For labels that are not classes (attributes ``[N, A]``, or ``[N, 0]`` for
    unlabelled data) ``count`` random distinct indices are drawn instead.
    """
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels)
    if labels.ndim != 1:
        return np.sort(rng.choice(len(labels), size=min(count, len(labels)), replace=False))
    return np.array([rng.choice(np.flatnonzero(labels == c)) for c in np.unique(labels)])


def _as_displayable(image):
    image = np.asarray(image)
    if image.dtype != np.uint8:
        image = np.clip(image, 0.0, 1.0)
    return image


def save_neighbour_grid(path, query_images, neighbour_images, row_titles=None,
                        neighbour_distances=None, dpi=100):
    """Writes the Fig. 8 grid: one row per query, query first, then its neighbours.

    Args:
        path: PNG path; written atomically (`dim_keras.io.atomic_path`).
        query_images: ``[Q, H, W, 3]`` (uint8 or floats in [0, 1]).
        neighbour_images: ``[Q, k, H, W, 3]``, closest first.
        row_titles: optional label of each query (e.g. its class name).
        neighbour_distances: optional ``[Q, k]`` distances shown under the images.
    """
    query_images = np.asarray(query_images)
    neighbour_images = np.asarray(neighbour_images)
    if neighbour_images.ndim != 5 or len(neighbour_images) != len(query_images):
        raise ValueError("neighbour_images must be [Q, k, H, W, C] with one row per query")
    rows, k = neighbour_images.shape[:2]
    figure, axes = figures.pyplot().subplots(rows, k + 1, figsize=(1.2 * (k + 1), 1.2 * rows + 0.3),
                                             squeeze=False)
    with figures.drawing(figure, path, dpi=dpi):
        for row in range(rows):
            panels = [query_images[row]] + list(neighbour_images[row])
            for column, image in enumerate(panels):
                axis = axes[row, column]
                axis.imshow(_as_displayable(image), interpolation="nearest")
                axis.set_xticks([])
                axis.set_yticks([])
                if column == 0 and row_titles is not None:
                    axis.set_ylabel(str(row_titles[row]), fontsize=7)
                if column > 0 and neighbour_distances is not None:
                    axis.set_xlabel(f"{neighbour_distances[row][column - 1]:.3g}", fontsize=6)
        axes[0, 0].set_title("query", fontsize=8)
        for column in range(1, k + 1):
            axes[0, column].set_title(f"#{column}", fontsize=8)
    return path


def neighbour_figure(path, train_features, train_images, test_features, test_images,
                     train_labels=None, class_names=None, k=4, metric="l1", count=10, seed=0):
    """App. A.4: one random training query per class, its ``k`` nearest test images.

    Returns:
        dict with ``queries`` (train indices), ``neighbours`` (test indices
        ``[Q, k]``), ``distances`` and ``path``.
    """
    labels = train_labels if train_labels is not None else np.zeros((len(train_features), 0))
    queries = query_indices(labels, count, seed)
    indices, distances = nearest_neighbours(np.asarray(train_features)[queries], test_features, k, metric)
    titles = None
    if train_labels is not None and np.ndim(train_labels) == 1:
        titles = [class_names[int(c)] if class_names is not None else str(c)
                  for c in np.asarray(train_labels)[queries]]
    test_images = np.asarray(test_images)
    save_neighbour_grid(path, np.asarray(train_images)[queries], test_images[indices], titles, distances)
    return {"queries": queries.tolist(), "neighbours": indices.tolist(),
            "distances": distances.tolist(), "path": os.fspath(path)}
