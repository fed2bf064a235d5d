"""Map geometry for the privileged expert: per-lane arrays cached per map, lane matching,
lane-to-lane conflict points, and reference paths along lane chains.

Everything here is computed once per `MapData` (a simulator episode shares one map object
across its frames) except `ReferencePath`, which is built per planning call along the lane
chain the expert wants to drive. Lane ids are opaque strings: only the topology fields of
`Lane` (successors, predecessors, neighbours) are used.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import numpy as np
from scipy.spatial import cKDTree

from planner.types import Lane, MapData

# Spacing of the lane points in the lane-matching KD-tree, and of densified boundaries used
# to measure lane widths (m). Matching refines on the true polyline, so this is only a
# search resolution.
_INDEX_SPACING_M = 2.0
_BOUNDARY_SPACING_M = 0.5
# Intersections of two centerlines closer than this to an end of BOTH lanes are topological
# joints (fork, join, successor), not crossings.
_JOINT_TOLERANCE_M = 1.5


def _resample(points: np.ndarray, spacing_m: float) -> tuple[np.ndarray, np.ndarray]:
    """Polyline (N, 2) -> (points (M, 2), arc length (M,)) at about `spacing_m`."""
    pts = np.asarray(points, dtype=np.float64)
    seg = np.hypot(*np.diff(pts, axis=0).T)
    s = np.concatenate([[0.0], np.cumsum(seg)])
    n = max(2, int(math.ceil(s[-1] / spacing_m)) + 1)
    q = np.linspace(0.0, s[-1], n)
    return np.stack([np.interp(q, s, pts[:, 0]), np.interp(q, s, pts[:, 1])], axis=1), q


@dataclass
class LaneGeometry:
    """One lane's centerline with arc length, headings and half widths (world frame)."""

    lane: Lane
    xy: np.ndarray  # (N, 2) centerline vertices
    s: np.ndarray  # (N,) cumulative arc length, m
    heading: np.ndarray  # (N,) heading of travel at each vertex, rad
    half_width_left_m: np.ndarray  # (N,) centerline -> left boundary
    half_width_right_m: np.ndarray  # (N,) centerline -> right boundary
    _tree: cKDTree | None = field(default=None, repr=False)

    @property
    def id(self) -> str:
        return self.lane.id

    @property
    def length(self) -> float:
        return float(self.s[-1])

    def project(self, point: np.ndarray, s_hint: float | None = None) -> tuple[float, float]:
        """(arc length, signed lateral offset, + = left) of the closest centerline point.
        `s_hint` restricts the search to +-8 m around it (long lanes have many vertices)."""
        lo, hi = 0, len(self.xy) - 1
        if s_hint is None and hi > 32:
            if self._tree is None:  # long lanes: find the neighbourhood first (cached per map)
                self._tree = cKDTree(self.xy)
            s_hint = float(self.s[self._tree.query(point)[1]])
        if s_hint is not None and hi > 16:
            lo = max(0, int(np.searchsorted(self.s, s_hint - 8.0)) - 1)
            hi = min(hi, int(np.searchsorted(self.s, s_hint + 8.0)) + 1)
        a = self.xy[lo:hi]
        ab = self.xy[lo + 1 : hi + 1] - a
        len2 = np.maximum((ab**2).sum(axis=1), 1e-12)
        u = np.clip(((point - a) * ab).sum(axis=1) / len2, 0.0, 1.0)
        d2 = ((a + u[:, None] * ab - point) ** 2).sum(axis=1)
        i = int(np.argmin(d2))
        cross = ab[i, 0] * (point[1] - a[i, 1]) - ab[i, 1] * (point[0] - a[i, 0])
        lateral = math.copysign(math.sqrt(d2[i]), cross)
        # Beyond either end, extend the end segment so the lateral offset stays meaningful.
        s = self.s[lo + i] + u[i] * math.sqrt(len2[i])
        if u[i] <= 0.0 and lo + i == 0 or u[i] >= 1.0 and lo + i == len(self.xy) - 2:
            t = ab[i] / math.sqrt(len2[i])
            rel = point - a[i]
            s = self.s[lo + i] + float(rel @ t)
            lateral = float(t[0] * rel[1] - t[1] * rel[0])
        return float(s), float(lateral)

    def half_widths_at(self, s: float) -> tuple[float, float]:
        return (
            float(np.interp(s, self.s, self.half_width_left_m)),
            float(np.interp(s, self.s, self.half_width_right_m)),
        )


def _lane_geometry(lane: Lane) -> LaneGeometry:
    xy = np.asarray(lane.centerline, dtype=np.float64).reshape(-1, 2)
    if len(xy) < 2 or not np.isfinite(xy).all():
        raise ValueError(
            f"lane {lane.id!r} has a centerline of shape {xy.shape} with non-finite or too few "
            "points: a lane needs at least 2 finite (x, y) vertices"
        )
    seg = np.hypot(*np.diff(xy, axis=0).T)
    keep = np.concatenate([[True], seg > 1e-6])  # drop repeated vertices
    xy = xy[keep]
    if len(xy) < 2:
        raise ValueError(f"lane {lane.id!r} has zero length")
    s = np.concatenate([[0.0], np.cumsum(np.hypot(*np.diff(xy, axis=0).T))])
    d = np.diff(xy, axis=0)
    seg_heading = np.arctan2(d[:, 1], d[:, 0])
    # unwrapped, so interpolating between vertices never crosses the +-pi seam
    heading = np.unwrap(np.concatenate([seg_heading, seg_heading[-1:]]))
    widths = []
    for boundary in (lane.left_boundary, lane.right_boundary):
        b = np.asarray(boundary, dtype=np.float64).reshape(-1, 2)
        if len(b) >= 2 and np.isfinite(b).all():
            dense, _ = _resample(b, _BOUNDARY_SPACING_M)
            dist, _ = cKDTree(dense).query(xy)
            widths.append(np.clip(dist, 0.5, 10.0))
        else:
            widths.append(np.full(len(xy), 1.75))  # no boundary given: a 3.5 m lane
    return LaneGeometry(lane, xy, s, heading, widths[0], widths[1])


@dataclass(frozen=True)
class Conflict:
    """Where lane `lane_a` at `s_a` meets lane `lane_b` at `s_b` (metres from lane starts)."""

    lane_a: str
    s_a: float
    lane_b: str
    s_b: float
    kind: str  # "crossing" (paths cross) or "merge" (lanes join into one successor)
    # how far before s_a (along lane_a and its predecessor) lane_a's centerline is still at
    # least the clearance away from lane_b (and, for a merge, the lane they join): where a
    # vehicle on lane_a waits without reaching into lane_b
    clear_back_a: float = 0.0
    clear_back_b: float = 0.0


@dataclass
class LaneMatch:
    lane_id: str
    s: float
    lateral: float  # m, + = left of the lane centerline
    heading_error: float  # rad, object heading minus lane heading, wrapped


class MapIndex:
    """Per-map cache: lane geometry, a KD-tree over lane points, conflict points."""

    def __init__(self, map_data: MapData, conflict_clearance_m: float = 3.5):
        self.map = map_data
        self.conflict_clearance_m = conflict_clearance_m
        self._dense_trees: dict[str, cKDTree] = {}
        self.lanes: dict[str, LaneGeometry] = {
            lid: _lane_geometry(lane) for lid, lane in map_data.lanes.items()
        }
        self.lane_ids: list[str] = list(self.lanes)
        pts, lane_idx, s_pts, head_pts = [], [], [], []
        for i, lid in enumerate(self.lane_ids):
            g = self.lanes[lid]
            dense, q = _resample(g.xy, _INDEX_SPACING_M)
            pts.append(dense)
            lane_idx.append(np.full(len(q), i))
            s_pts.append(q)
            head_pts.append(np.interp(q, g.s, np.unwrap(g.heading)))
        self._tree = cKDTree(np.concatenate(pts)) if pts else None
        self._pt_lane = np.concatenate(lane_idx) if pts else np.zeros(0, int)
        self._pt_s = np.concatenate(s_pts) if pts else np.zeros(0)
        self._pt_heading = np.concatenate(head_pts) if pts else np.zeros(0)
        self.conflicts: dict[str, list[Conflict]] = {lid: [] for lid in self.lane_ids}
        self._find_conflicts()
        self.ring_lanes = self._find_rings()

    def _find_rings(self, max_depth: int = 64) -> set[str]:
        """Lanes on a cycle of the successor graph (a roundabout's circulating lanes):
        traffic on them has priority over traffic entering them."""
        ring: set[str] = set()
        for start in self.lane_ids:
            frontier, seen = [start], set()
            for _ in range(max_depth):
                nxt = []
                for lid in frontier:
                    for succ in self.lanes[lid].lane.successors:
                        if succ == start:
                            ring.add(start)
                            break
                        if succ in self.lanes and succ not in seen:
                            seen.add(succ)
                            nxt.append(succ)
                if start in ring or not nxt:
                    break
                frontier = nxt
        return ring

    # -- matching -----------------------------------------------------------------------------
    def match(
        self,
        x: float,
        y: float,
        yaw: float,
        max_distance_m: float,
        max_heading_error_rad: float,
    ) -> list[LaneMatch]:
        """Lanes whose centerline passes within `max_distance_m` of (x, y) with a heading
        within `max_heading_error_rad` of `yaw`, closest first (exact polyline projection)."""
        if self._tree is None:
            return []
        p = np.array([x, y])
        idx = self._tree.query_ball_point(p, max_distance_m + _INDEX_SPACING_M)
        if not idx:
            return []
        idx = np.asarray(idx)
        out: list[LaneMatch] = []
        for li in np.unique(self._pt_lane[idx]):
            sel = idx[self._pt_lane[idx] == li]
            d2 = ((self._tree.data[sel] - p) ** 2).sum(axis=1)
            hint = float(self._pt_s[sel[int(np.argmin(d2))]])
            g = self.lanes[self.lane_ids[li]]
            s, lat = g.project(p, hint)
            if abs(lat) > max_distance_m or s < -2.0 or s > g.length + 2.0:
                continue
            head = float(np.interp(s, g.s, g.heading))
            err = (yaw - head + math.pi) % (2 * math.pi) - math.pi
            if abs(err) > max_heading_error_rad:
                continue
            out.append(LaneMatch(g.id, s, lat, err))
        out.sort(key=lambda m: abs(m.lateral))
        return out

    def match_many(
        self, xy: np.ndarray, yaw: np.ndarray, max_heading_error_rad: float, k: int = 8
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Approximate lane matching of many points at once (for agents' lane-level
        prediction): (lane index (M,) or -1, arc length (M,), distance (M,))."""
        m = len(xy)
        if self._tree is None or m == 0:
            return np.full(m, -1), np.zeros(m), np.full(m, np.inf)
        k = min(k, len(self._pt_lane))
        dist, idx = self._tree.query(xy, k=k)
        dist = dist.reshape(m, k)
        idx = idx.reshape(m, k)
        err = np.abs((yaw[:, None] - self._pt_heading[idx] + math.pi) % (2 * math.pi) - math.pi)
        score = np.where(err < max_heading_error_rad, dist + 2.0 * err, np.inf)
        best = np.argmin(score, axis=1)
        rows = np.arange(m)
        ok = np.isfinite(score[rows, best])
        bi = idx[rows, best]
        h = self._pt_heading[bi]
        rel = xy - self._tree.data[bi]
        s = self._pt_s[bi] + rel[:, 0] * np.cos(h) + rel[:, 1] * np.sin(h)
        return np.where(ok, self._pt_lane[bi], -1), s, np.where(ok, dist[rows, best], np.inf)

    # -- conflicts ----------------------------------------------------------------------------
    def _find_conflicts(self) -> None:
        """Crossings of lane centerlines (shapely's sweep is fast even for 10 km lanes) and
        merges (two lanes with a common successor)."""
        from shapely import STRtree
        from shapely.geometry import LineString

        ids = self.lane_ids
        if len(ids) < 2:
            return
        lines = [LineString(self.lanes[lid].xy) for lid in ids]
        tree = STRtree(lines)
        left, right = tree.query(lines, predicate="intersects")
        for i, j in zip(left.tolist(), right.tolist()):
            if i >= j:
                continue
            a, b = self.lanes[ids[i]], self.lanes[ids[j]]
            if ids[j] in a.lane.successors or ids[j] in a.lane.predecessors:
                continue
            if ids[j] in (a.lane.left_neighbor, a.lane.right_neighbor):
                continue
            inter = lines[i].intersection(lines[j])
            for pt in _points_of(inter):
                sa = float(lines[i].project(pt))
                sb = float(lines[j].project(pt))
                at_joint_a = sa < _JOINT_TOLERANCE_M or sa > a.length - _JOINT_TOLERANCE_M
                at_joint_b = sb < _JOINT_TOLERANCE_M or sb > b.length - _JOINT_TOLERANCE_M
                if at_joint_a and at_joint_b:
                    continue
                self._add(Conflict(ids[i], sa, ids[j], sb, "crossing"))
        by_successor: dict[str, list[str]] = {}
        for lid in ids:
            for succ in self.lanes[lid].lane.successors:
                by_successor.setdefault(succ, []).append(lid)
        for preds in by_successor.values():
            for ia, la in enumerate(preds):
                for lb in preds[ia + 1 :]:
                    self._add(
                        Conflict(la, self.lanes[la].length, lb, self.lanes[lb].length, "merge")
                    )

    def _add(self, c: Conflict) -> None:
        c = dataclasses.replace(
            c,
            clear_back_a=self._clear_back(c.lane_a, c.s_a, c.lane_b, c.kind == "merge"),
            clear_back_b=self._clear_back(c.lane_b, c.s_b, c.lane_a, c.kind == "merge"),
        )
        self.conflicts[c.lane_a].append(c)
        self.conflicts[c.lane_b].append(
            Conflict(c.lane_b, c.s_b, c.lane_a, c.s_a, c.kind, c.clear_back_b, c.clear_back_a)
        )

    def _dense_tree(self, lane_id: str) -> cKDTree:
        tree = self._dense_trees.get(lane_id)
        if tree is None:
            dense, _ = _resample(self.lanes[lane_id].xy, 0.5)
            tree = self._dense_trees[lane_id] = cKDTree(dense)
        return tree

    def _clear_back(self, lane_a: str, s_a: float, lane_b: str, merge: bool, max_back_m=40.0):
        """Distance back from s_a on lane_a (continuing onto its first predecessor) to the
        first point whose centerline is `conflict_clearance_m` clear of lane_b (and, for a
        merge, of the lanes lane_b flows into)."""
        others = [lane_b] + (list(self.lanes[lane_b].lane.successors) if merge else [])
        trees = [self._dense_tree(o) for o in others if o in self.lanes]
        g = self.lanes[lane_a]
        back = np.arange(0.0, max_back_m, 0.5)
        s = s_a - back
        pts = np.stack([np.interp(s, g.s, g.xy[:, 0]), np.interp(s, g.s, g.xy[:, 1])], axis=1)
        preds = [p for p in g.lane.predecessors if p in self.lanes]
        before = s < 0.0
        if before.any() and preds:
            gp = self.lanes[preds[0]]
            sp = gp.length + s[before]
            pts[before] = np.stack(
                [np.interp(sp, gp.s, gp.xy[:, 0]), np.interp(sp, gp.s, gp.xy[:, 1])], axis=1
            )
        dist = np.full(len(s), np.inf)
        for tree in trees:
            dist = np.minimum(dist, tree.query(pts)[0])
        clear = np.flatnonzero(dist >= self.conflict_clearance_m)
        return float(back[clear[0]]) if len(clear) else float(max_back_m)


def _points_of(geom) -> list:
    """Point geometries of a shapely intersection result (points, or overlapping pieces)."""
    from shapely.geometry import Point

    if geom.is_empty:
        return []
    kind = geom.geom_type
    if kind == "Point":
        return [geom]
    if kind in ("MultiPoint", "GeometryCollection", "MultiLineString"):
        out = []
        for g in geom.geoms:
            out.extend(_points_of(g))
        return out
    if kind == "LineString":  # collinear overlap: its start is where the paths meet
        return [Point(geom.coords[0])]
    return []


@dataclass
class PathSegment:
    lane_id: str
    path_s0: float  # path arc length where this lane's piece starts
    lane_s0: float  # lane arc length at that point
    lane_s1: float  # lane arc length where the piece ends


@dataclass
class ReferencePath:
    """A uniformly resampled centerline along a lane chain (world frame).

    `s` is arc length from the path's start; `s_ego` is the ego rear axle's projection."""

    s: np.ndarray  # (N,) m, uniform step `ds`
    xy: np.ndarray  # (N, 2)
    heading: np.ndarray  # (N,) rad, unwrapped
    curvature: np.ndarray  # (N,) 1/m
    half_width_left_m: np.ndarray  # (N,)
    half_width_right_m: np.ndarray  # (N,)
    speed_limit_mps: np.ndarray  # (N,)
    segments: list[PathSegment]
    ds: float
    s_ego: float = 0.0
    lateral_ego: float = 0.0
    heading_error_ego: float = 0.0
    # arc length where the chain ends without a successor (None: ends at the look-ahead)
    dead_end_s: float | None = None
    lane_ids: tuple[str, ...] = field(default_factory=tuple)
    _tree: cKDTree | None = field(default=None, repr=False)

    @property
    def length(self) -> float:
        return float(self.s[-1])

    def index(self, s: float | np.ndarray) -> np.ndarray | int:
        """Nearest sample index of arc length(s) (clamped to the path)."""
        if isinstance(s, (float, int, np.floating)):
            return min(max(int(s / self.ds + 0.5), 0), len(self.s) - 1)
        return np.clip(np.rint(np.asarray(s) / self.ds).astype(int), 0, len(self.s) - 1)

    def project(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(M, 2) world points -> (arc length (M,), lateral offset (M,), + = left).
        Points beyond the ends are extrapolated along the end tangents."""
        pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        if len(pts) == 0:
            return np.zeros(0), np.zeros(0)
        if self._tree is None:  # built on first use; a path lives for one planning call
            self._tree = cKDTree(self.xy)
        _, i = self._tree.query(pts)
        h = self.heading[i]
        c, sn = np.cos(h), np.sin(h)
        rel = pts - self.xy[i]
        along = rel[:, 0] * c + rel[:, 1] * sn
        lateral = -rel[:, 0] * sn + rel[:, 1] * c
        return self.s[i] + along, lateral

    def sample(self, s: float) -> tuple[float, float, float]:
        """(x, y, heading) at arc length s (clamped to the path)."""
        k = int(self.index(s))
        return float(self.xy[k, 0]), float(self.xy[k, 1]), float(self.heading[k])

    def lane_at(self, s: float) -> str:
        for seg in reversed(self.segments):
            if s >= seg.path_s0:
                return seg.lane_id
        return self.segments[0].lane_id

    def path_s_of(self, lane_id: str, lane_s: float) -> float | None:
        """Path arc length of a point given on one of the path's lanes (None if not on it)."""
        for seg in self.segments:
            if seg.lane_id == lane_id and seg.lane_s0 - 1e-6 <= lane_s <= seg.lane_s1 + 1e-6:
                return seg.path_s0 + lane_s - seg.lane_s0
        return None


def build_path(
    index: MapIndex,
    start_lane: str,
    start_lane_s: float,
    back_m: float,
    ahead_m: float,
    ds: float,
    choose_successor,
    choose_predecessor,
    topology_ahead_m: float = 0.0,
) -> ReferencePath:
    """Chain lanes from `start_lane` backwards `back_m` and forwards `ahead_m` around lane arc
    length `start_lane_s`, resample every `ds` metres. `choose_successor(lane_id, options)`
    and `choose_predecessor(...)` pick a branch (route first). Beyond the geometry, the lane
    chain is followed (topology only) up to `topology_ahead_m` from the start to find where
    it dead-ends (`dead_end_s` may then lie past the path's end)."""
    g0 = index.lanes[start_lane]
    # backward part: (lane, s_from, s_to) pieces in travel order
    pieces: list[tuple[str, float, float]] = []
    s_from = max(0.0, start_lane_s - back_m)
    remaining_back = back_m - (start_lane_s - s_from)
    lane = start_lane
    back_pieces: list[tuple[str, float, float]] = []
    seen = {start_lane}
    while remaining_back > 0:
        preds = [p for p in index.lanes[lane].lane.predecessors if p in index.lanes]
        if not preds:
            break
        prev = choose_predecessor(lane, preds)
        if prev in seen:
            break
        seen.add(prev)
        gp = index.lanes[prev]
        take = min(remaining_back, gp.length)
        back_pieces.append((prev, gp.length - take, gp.length))
        remaining_back -= take
        lane = prev
    pieces.extend(reversed(back_pieces))
    s_to = min(g0.length, start_lane_s + ahead_m)
    pieces.append((start_lane, s_from, max(s_to, s_from + 1e-3)))
    remaining = ahead_m - (s_to - start_lane_s)
    lane = start_lane
    dead_end = False
    seen = {start_lane}
    while remaining > 0:
        succs = [p for p in index.lanes[lane].lane.successors if p in index.lanes]
        if not succs:
            dead_end = True
            break
        nxt = choose_successor(lane, succs)
        if nxt in seen:  # a loop (roundabout ring): stop rather than wrap onto ourselves
            break
        seen.add(nxt)
        gn = index.lanes[nxt]
        take = min(remaining, gn.length)
        pieces.append((nxt, 0.0, take))
        remaining -= take
        lane = nxt
    beyond = None  # dead end past the geometry: metres after the path's last point
    if not dead_end and remaining <= 0 and topology_ahead_m > ahead_m:
        last_lane, _, last_b = pieces[-1]
        extra = index.lanes[last_lane].length - last_b
        lane = last_lane
        while extra < topology_ahead_m - ahead_m:
            succs = [p for p in index.lanes[lane].lane.successors if p in index.lanes]
            if not succs:
                beyond = extra
                break
            nxt = choose_successor(lane, succs)
            if nxt in seen:
                break
            seen.add(nxt)
            extra += index.lanes[nxt].length
            lane = nxt

    xs, ys, ss, hwl, hwr, lim = [], [], [], [], [], []
    segments: list[PathSegment] = []
    s_ego_path = 0.0
    for lane_id, a, b in pieces:
        g = index.lanes[lane_id]
        inner = (g.s > a) & (g.s < b)
        s_local = np.concatenate([[a], g.s[inner], [b]])
        pts_x = np.interp(s_local, g.s, g.xy[:, 0])
        pts_y = np.interp(s_local, g.s, g.xy[:, 1])
        if xs:
            # arc length continues across the joint by the actual gap between the lanes
            gap = math.hypot(pts_x[0] - xs[-1][-1], pts_y[0] - ys[-1][-1])
            base = float(ss[-1][-1]) + gap - a
        else:
            base = -a
        segments.append(PathSegment(lane_id, base + a, a, b))
        if lane_id == start_lane and a == s_from:
            s_ego_path = base + start_lane_s
        ss.append(s_local + base)
        xs.append(pts_x)
        ys.append(pts_y)
        hwl.append(np.interp(s_local, g.s, g.half_width_left_m))
        hwr.append(np.interp(s_local, g.s, g.half_width_right_m))
        lim.append(np.full(len(s_local), g.lane.speed_limit_mps))
    s_raw = np.concatenate(ss)
    x_raw, y_raw = np.concatenate(xs), np.concatenate(ys)
    keep = np.concatenate([[True], np.diff(s_raw) > 1e-6])
    s_raw, x_raw, y_raw = s_raw[keep], x_raw[keep], y_raw[keep]
    hwl_raw, hwr_raw = np.concatenate(hwl)[keep], np.concatenate(hwr)[keep]
    lim_raw = np.concatenate(lim)[keep]
    n = max(2, int(s_raw[-1] / ds) + 1)
    s = np.arange(n) * ds
    x = np.interp(s, s_raw, x_raw)
    y = np.interp(s, s_raw, y_raw)
    dx, dy = np.gradient(x), np.gradient(y)
    heading = np.unwrap(np.arctan2(dy, dx))
    curvature = np.gradient(heading) / ds
    # speed limit: the value of the lane the sample lies on (no interpolation across a change)
    lim_idx = np.clip(np.searchsorted(s_raw, s, side="right") - 1, 0, len(s_raw) - 1)
    path = ReferencePath(
        s=s,
        xy=np.stack([x, y], axis=1),
        heading=heading,
        curvature=curvature,
        half_width_left_m=np.interp(s, s_raw, hwl_raw),
        half_width_right_m=np.interp(s, s_raw, hwr_raw),
        speed_limit_mps=lim_raw[lim_idx],
        segments=segments,
        ds=ds,
        s_ego=s_ego_path,
        dead_end_s=(
            float(s_raw[-1])
            if dead_end
            else (float(s_raw[-1]) + beyond if beyond is not None else None)
        ),
        lane_ids=tuple(seg.lane_id for seg in segments),
    )
    return path


def path_from_polyline(
    points: np.ndarray, speed_limit_mps: float, half_width_m: float, ds: float
) -> ReferencePath:
    """A path from route waypoints when the ego is on no known lane (fallback)."""
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    s_raw = np.concatenate([[0.0], np.cumsum(np.hypot(*np.diff(pts, axis=0).T))])
    keep = np.concatenate([[True], np.diff(s_raw) > 1e-6])
    pts, s_raw = pts[keep], s_raw[keep]
    n = max(2, int(s_raw[-1] / ds) + 1)
    s = np.arange(n) * ds
    x = np.interp(s, s_raw, pts[:, 0])
    y = np.interp(s, s_raw, pts[:, 1])
    heading = np.unwrap(np.arctan2(np.gradient(y), np.gradient(x)))
    return ReferencePath(
        s=s,
        xy=np.stack([x, y], axis=1),
        heading=heading,
        curvature=np.gradient(heading) / ds,
        half_width_left_m=np.full(n, half_width_m),
        half_width_right_m=np.full(n, half_width_m),
        speed_limit_mps=np.full(n, speed_limit_mps),
        segments=[PathSegment("", 0.0, 0.0, float(s[-1]))],
        ds=ds,
    )
