"""Lighter meshes for the cameras, the same physics: software OpenGL spends a camera frame on vertices.

:func:`render_model` simplifies a copy of the model's meshes for the OpenGL context only; physics,
collisions and inertia keep the original model. docs/nodes.md (``render_mesh_cell``) has the trade-off.
"""

from __future__ import annotations

import copy

import mujoco
import numpy as np

MIN_FACES = 200  # meshes smaller than this (the table top) are left alone


def render_model(model: mujoco.MjModel, cell: float) -> mujoco.MjModel:
    """A copy of ``model`` whose meshes drop triangles smaller than ``cell`` metres (0: an unchanged copy).

    Mesa's llvmpipe (the software OpenGL these stations render with when there is no GPU) spends almost
    all of a camera frame transforming vertices: the two ViperX arms carry 57,000 mesh triangles (the
    gripper and gripper bar alone are 16,600 per arm), and a frame costs about the same at 16 px as at
    224 px. Vertex clustering: the vertices of a mesh are snapped to a cubic grid of side ``cell``, each
    grid cell keeps one representative vertex, and the triangles that collapse (two corners in one cell)
    or repeat are dropped. The kept triangles still index the original vertices and normals, so nothing
    is moved or re-shaded; only detail finer than ``cell`` goes. At 2 mm the images differ from the full
    meshes by about 0.05 grey levels on average (less than the JPEG noise of the dataset) while a frame
    renders about twice as fast. Only the copy's face arrays and face counts change.
    """
    if not np.isfinite(cell) or cell < 0:
        raise ValueError(f"render mesh cell must be a finite size >= 0 (m), got {cell!r}")
    out = copy.copy(model)
    if cell == 0:
        return out
    for mesh in range(out.nmesh):
        vert_adr, vert_num = out.mesh_vertadr[mesh], out.mesh_vertnum[mesh]
        face_adr, face_num = out.mesh_faceadr[mesh], out.mesh_facenum[mesh]
        if face_num < MIN_FACES:
            continue
        faces = slice(face_adr, face_adr + face_num)
        representative = _representatives(out.mesh_vert[vert_adr : vert_adr + vert_num], cell)
        kept = _surviving(representative[out.mesh_face[faces]])
        head = slice(face_adr, face_adr + len(kept))
        # kept triangles move to the front of the mesh's block, corners snapped to their cell's vertex
        out.mesh_face[head] = representative[out.mesh_face[faces][kept]]
        out.mesh_facenormal[head] = out.mesh_facenormal[faces][kept]
        if out.nmeshtexcoord:
            out.mesh_facetexcoord[head] = out.mesh_facetexcoord[faces][kept]
        out.mesh_facenum[mesh] = len(kept)
    return out


def _representatives(vertices: np.ndarray, cell: float) -> np.ndarray:
    """For each vertex, the index of the first vertex in its grid cell."""
    keys = np.floor(np.asarray(vertices, np.float64) / cell).astype(np.int64)
    _, first, inverse = np.unique(keys, axis=0, return_index=True, return_inverse=True)
    return first[inverse.ravel()]


def _surviving(corners: np.ndarray) -> np.ndarray:
    """Indices (in order) of the triangles whose corners (snapped vertex indices ``[F, 3]``) are three
    different cells, keeping the first of those that share the same three cells."""
    distinct = (corners[:, 0] != corners[:, 1]) & (corners[:, 1] != corners[:, 2]) & (corners[:, 0] != corners[:, 2])
    candidates = np.flatnonzero(distinct)
    _, first = np.unique(np.sort(corners[candidates], axis=1), axis=0, return_index=True)
    return candidates[np.sort(first)]
