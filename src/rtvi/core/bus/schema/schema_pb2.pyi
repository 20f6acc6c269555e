import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Frame(_message.Message):
    __slots__ = ("version", "id", "timestamp", "sensorId", "objects", "fov", "rois", "socialDistancing", "segmentation", "interactions", "congestions", "info")
    class InfoEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    VERSION_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    SENSORID_FIELD_NUMBER: _ClassVar[int]
    OBJECTS_FIELD_NUMBER: _ClassVar[int]
    FOV_FIELD_NUMBER: _ClassVar[int]
    ROIS_FIELD_NUMBER: _ClassVar[int]
    SOCIALDISTANCING_FIELD_NUMBER: _ClassVar[int]
    SEGMENTATION_FIELD_NUMBER: _ClassVar[int]
    INTERACTIONS_FIELD_NUMBER: _ClassVar[int]
    CONGESTIONS_FIELD_NUMBER: _ClassVar[int]
    INFO_FIELD_NUMBER: _ClassVar[int]
    version: str
    id: str
    timestamp: _timestamp_pb2.Timestamp
    sensorId: str
    objects: _containers.RepeatedCompositeFieldContainer[Object]
    fov: _containers.RepeatedCompositeFieldContainer[TypeMetrics]
    rois: _containers.RepeatedCompositeFieldContainer[TypeMetrics]
    socialDistancing: SD
    segmentation: Segmentation
    interactions: _containers.RepeatedCompositeFieldContainer[Interaction]
    congestions: _containers.RepeatedCompositeFieldContainer[Congestion]
    info: _containers.ScalarMap[str, str]
    def __init__(self, version: _Optional[str] = ..., id: _Optional[str] = ..., timestamp: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., sensorId: _Optional[str] = ..., objects: _Optional[_Iterable[_Union[Object, _Mapping]]] = ..., fov: _Optional[_Iterable[_Union[TypeMetrics, _Mapping]]] = ..., rois: _Optional[_Iterable[_Union[TypeMetrics, _Mapping]]] = ..., socialDistancing: _Optional[_Union[SD, _Mapping]] = ..., segmentation: _Optional[_Union[Segmentation, _Mapping]] = ..., interactions: _Optional[_Iterable[_Union[Interaction, _Mapping]]] = ..., congestions: _Optional[_Iterable[_Union[Congestion, _Mapping]]] = ..., info: _Optional[_Mapping[str, str]] = ...) -> None: ...

class Object(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class TypeMetrics(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class SD(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Segmentation(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Interaction(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Congestion(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Coordinate(_message.Message):
    __slots__ = ("x", "y", "z")
    X_FIELD_NUMBER: _ClassVar[int]
    Y_FIELD_NUMBER: _ClassVar[int]
    Z_FIELD_NUMBER: _ClassVar[int]
    x: float
    y: float
    z: float
    def __init__(self, x: _Optional[float] = ..., y: _Optional[float] = ..., z: _Optional[float] = ...) -> None: ...

class Location(_message.Message):
    __slots__ = ("lat", "lon", "alt")
    LAT_FIELD_NUMBER: _ClassVar[int]
    LON_FIELD_NUMBER: _ClassVar[int]
    ALT_FIELD_NUMBER: _ClassVar[int]
    lat: float
    lon: float
    alt: float
    def __init__(self, lat: _Optional[float] = ..., lon: _Optional[float] = ..., alt: _Optional[float] = ...) -> None: ...

class AnalyticsModule(_message.Message):
    __slots__ = ("id", "description", "source", "version", "info")
    class InfoEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    INFO_FIELD_NUMBER: _ClassVar[int]
    id: str
    description: str
    source: str
    version: str
    info: _containers.ScalarMap[str, str]
    def __init__(self, id: _Optional[str] = ..., description: _Optional[str] = ..., source: _Optional[str] = ..., version: _Optional[str] = ..., info: _Optional[_Mapping[str, str]] = ...) -> None: ...

class Sensor(_message.Message):
    __slots__ = ("id", "type", "description", "location", "coordinate", "info")
    class InfoEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    LOCATION_FIELD_NUMBER: _ClassVar[int]
    COORDINATE_FIELD_NUMBER: _ClassVar[int]
    INFO_FIELD_NUMBER: _ClassVar[int]
    id: str
    type: str
    description: str
    location: Location
    coordinate: Coordinate
    info: _containers.ScalarMap[str, str]
    def __init__(self, id: _Optional[str] = ..., type: _Optional[str] = ..., description: _Optional[str] = ..., location: _Optional[_Union[Location, _Mapping]] = ..., coordinate: _Optional[_Union[Coordinate, _Mapping]] = ..., info: _Optional[_Mapping[str, str]] = ...) -> None: ...

class Place(_message.Message):
    __slots__ = ("id", "name", "type", "location", "coordinate", "info")
    class InfoEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    LOCATION_FIELD_NUMBER: _ClassVar[int]
    COORDINATE_FIELD_NUMBER: _ClassVar[int]
    INFO_FIELD_NUMBER: _ClassVar[int]
    id: str
    name: str
    type: str
    location: Location
    coordinate: Coordinate
    info: _containers.ScalarMap[str, str]
    def __init__(self, id: _Optional[str] = ..., name: _Optional[str] = ..., type: _Optional[str] = ..., location: _Optional[_Union[Location, _Mapping]] = ..., coordinate: _Optional[_Union[Coordinate, _Mapping]] = ..., info: _Optional[_Mapping[str, str]] = ...) -> None: ...

class Embedding(_message.Message):
    __slots__ = ("vector", "info")
    class InfoEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    VECTOR_FIELD_NUMBER: _ClassVar[int]
    INFO_FIELD_NUMBER: _ClassVar[int]
    vector: _containers.RepeatedScalarFieldContainer[float]
    info: _containers.ScalarMap[str, str]
    def __init__(self, vector: _Optional[_Iterable[float]] = ..., info: _Optional[_Mapping[str, str]] = ...) -> None: ...

class Query(_message.Message):
    __slots__ = ("id", "params", "prompts", "response", "embeddings")
    class ParamsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class PromptsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    PROMPTS_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    EMBEDDINGS_FIELD_NUMBER: _ClassVar[int]
    id: str
    params: _containers.ScalarMap[str, str]
    prompts: _containers.ScalarMap[str, str]
    response: str
    embeddings: _containers.RepeatedCompositeFieldContainer[Embedding]
    def __init__(self, id: _Optional[str] = ..., params: _Optional[_Mapping[str, str]] = ..., prompts: _Optional[_Mapping[str, str]] = ..., response: _Optional[str] = ..., embeddings: _Optional[_Iterable[_Union[Embedding, _Mapping]]] = ...) -> None: ...

class LLM(_message.Message):
    __slots__ = ("info", "queries", "visionEmbeddings")
    class InfoEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    INFO_FIELD_NUMBER: _ClassVar[int]
    QUERIES_FIELD_NUMBER: _ClassVar[int]
    VISIONEMBEDDINGS_FIELD_NUMBER: _ClassVar[int]
    info: _containers.ScalarMap[str, str]
    queries: _containers.RepeatedCompositeFieldContainer[Query]
    visionEmbeddings: _containers.RepeatedCompositeFieldContainer[Embedding]
    def __init__(self, info: _Optional[_Mapping[str, str]] = ..., queries: _Optional[_Iterable[_Union[Query, _Mapping]]] = ..., visionEmbeddings: _Optional[_Iterable[_Union[Embedding, _Mapping]]] = ...) -> None: ...

class VisionLLM(_message.Message):
    __slots__ = ("version", "timestamp", "end", "startFrameId", "endFrameId", "sensor", "llm", "info", "frames")
    class InfoEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    VERSION_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    STARTFRAMEID_FIELD_NUMBER: _ClassVar[int]
    ENDFRAMEID_FIELD_NUMBER: _ClassVar[int]
    SENSOR_FIELD_NUMBER: _ClassVar[int]
    LLM_FIELD_NUMBER: _ClassVar[int]
    INFO_FIELD_NUMBER: _ClassVar[int]
    FRAMES_FIELD_NUMBER: _ClassVar[int]
    version: str
    timestamp: _timestamp_pb2.Timestamp
    end: _timestamp_pb2.Timestamp
    startFrameId: str
    endFrameId: str
    sensor: Sensor
    llm: LLM
    info: _containers.ScalarMap[str, str]
    frames: _containers.RepeatedCompositeFieldContainer[Frame]
    def __init__(self, version: _Optional[str] = ..., timestamp: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., startFrameId: _Optional[str] = ..., endFrameId: _Optional[str] = ..., sensor: _Optional[_Union[Sensor, _Mapping]] = ..., llm: _Optional[_Union[LLM, _Mapping]] = ..., info: _Optional[_Mapping[str, str]] = ..., frames: _Optional[_Iterable[_Union[Frame, _Mapping]]] = ...) -> None: ...
