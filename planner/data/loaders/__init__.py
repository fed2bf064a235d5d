"""Real-log loaders: nuScenes, ScenarioNet pickles and rosbag2 recordings, producing the same
`Scene`s and `Sample`s as the simulator (docs/DATA_SOURCES.md).

    from planner.data.loaders import open_log_source
    source = open_log_source("/data/nuscenes")          # format chosen by content
    source = open_log_source("scenarionet:/data/waymo")  # or named explicitly
    for sample in source.samples(stride_s=0.5):
        ...  # sample.scene (cameras real where the log has them), sample.future_ego, ...
"""

from __future__ import annotations

from pathlib import Path

from planner.data.loaders.common import (
    IrregularRateError,
    LogData,
    LogFormatError,
    LogLoadersConfig,
    LogSource,
    NoEgoTrackError,
    ResampledLog,
    load_loaders_config,
)

FORMATS = ("nuscenes", "scenarionet", "rosbag2")
_ALIASES = {"rosbag": "rosbag2", "ros2": "rosbag2", "nusc": "nuscenes", "metadrive": "scenarionet"}


def _split_spec(path_or_spec: str | Path) -> tuple[str | None, Path]:
    """'nuscenes:/data' -> ('nuscenes', Path('/data')); a plain path -> (None, path)."""
    text = str(path_or_spec)
    head, sep, tail = text.partition(":")
    name = _ALIASES.get(head.lower(), head.lower())
    if sep and name in FORMATS:
        return name, Path(tail).expanduser()
    return None, Path(text).expanduser()


def detect_format(path: Path) -> str:
    """Which loader reads `path`, judged by its content."""
    from planner.data.loaders import nuscenes, rosbag, scenarionet

    if path.is_dir():
        if rosbag.is_rosbag2(path):
            return "rosbag2"
        if nuscenes.find_version(path) or all((path / f).is_file() for f in nuscenes.TABLE_FILES):
            return "nuscenes"
        if (path / scenarionet.SUMMARY_FILE).is_file():
            return "scenarionet"
        pickles = sorted(p for p in path.glob("*.pkl"))
        if pickles and scenarionet.is_scenario_pickle(pickles[0]):
            return "scenarionet"
    elif path.suffix == ".pkl" and scenarionet.is_scenario_pickle(path):
        return "scenarionet"
    elif path.suffix in (".mcap", ".db3"):
        raise LogFormatError(
            f"{str(path)!r} is a rosbag2 storage file: open the bag directory that holds it "
            "and its metadata.yaml"
        )
    raise LogFormatError(
        f"unknown log format at {str(path)!r}: expected a nuScenes dataroot (a folder such as "
        "v1.0-mini with scene.json, sample.json, sample_data.json, ego_pose.json), a ScenarioNet "
        "scenario pickle or dataset folder (dataset_summary.pkl / *.pkl with tracks, metadata, "
        "map_features), or a rosbag2 directory (metadata.yaml with .db3 or .mcap files); or "
        f"name the format: one of {', '.join(f + ':PATH' for f in FORMATS)}"
    )


def open_log_source(
    path_or_spec: str | Path,
    config: LogLoadersConfig | None = None,
    overrides: list[str] | tuple[str, ...] = (),
) -> LogSource:
    """The LogSource for a path (format chosen by content) or a 'format:path' spec.

    Raises FileNotFoundError for a missing path and LogFormatError (a UserError) for an
    unknown format; NoEgoTrackError / IrregularRateError surface when the logs are read."""
    fmt, path = _split_spec(path_or_spec)
    if not path.exists():
        raise FileNotFoundError(
            f"log path {str(path)!r} does not exist: give a nuScenes dataroot, a ScenarioNet "
            "pickle or dataset folder, or a rosbag2 directory"
        )
    if config is None:
        config = load_loaders_config(overrides=overrides)
    fmt = fmt or detect_format(path)
    if fmt == "nuscenes":
        from planner.data.loaders.nuscenes import NuScenesSource

        return NuScenesSource(path, config)
    if fmt == "scenarionet":
        from planner.data.loaders.scenarionet import ScenarioNetSource

        return ScenarioNetSource(path, config)
    from planner.data.loaders.rosbag import RosbagSource

    return RosbagSource(path, config)


__all__ = [
    "FORMATS",
    "IrregularRateError",
    "LogData",
    "LogFormatError",
    "LogLoadersConfig",
    "LogSource",
    "NoEgoTrackError",
    "ResampledLog",
    "detect_format",
    "load_loaders_config",
    "open_log_source",
]
