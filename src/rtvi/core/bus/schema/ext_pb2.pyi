import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from rtvi.core.bus.schema import schema_pb2 as _schema_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Incident(_message.Message):
    __slots__ = ("sensorId", "timestamp", "end", "objectIds", "frameIds", "place", "analyticsModule", "category", "embeddings", "isAnomaly", "info", "llm")
    class InfoEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    SENSORID_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    OBJECTIDS_FIELD_NUMBER: _ClassVar[int]
    FRAMEIDS_FIELD_NUMBER: _ClassVar[int]
    PLACE_FIELD_NUMBER: _ClassVar[int]
    ANALYTICSMODULE_FIELD_NUMBER: _ClassVar[int]
    CATEGORY_FIELD_NUMBER: _ClassVar[int]
    EMBEDDINGS_FIELD_NUMBER: _ClassVar[int]
    ISANOMALY_FIELD_NUMBER: _ClassVar[int]
    INFO_FIELD_NUMBER: _ClassVar[int]
    LLM_FIELD_NUMBER: _ClassVar[int]
    sensorId: str
    timestamp: _timestamp_pb2.Timestamp
    end: _timestamp_pb2.Timestamp
    objectIds: _containers.RepeatedScalarFieldContainer[str]
    frameIds: _containers.RepeatedScalarFieldContainer[str]
    place: _schema_pb2.Place
    analyticsModule: _schema_pb2.AnalyticsModule
    category: str
    embeddings: _containers.RepeatedCompositeFieldContainer[_schema_pb2.Embedding]
    isAnomaly: bool
    info: _containers.ScalarMap[str, str]
    llm: _schema_pb2.LLM
    def __init__(self, sensorId: _Optional[str] = ..., timestamp: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., objectIds: _Optional[_Iterable[str]] = ..., frameIds: _Optional[_Iterable[str]] = ..., place: _Optional[_Union[_schema_pb2.Place, _Mapping]] = ..., analyticsModule: _Optional[_Union[_schema_pb2.AnalyticsModule, _Mapping]] = ..., category: _Optional[str] = ..., embeddings: _Optional[_Iterable[_Union[_schema_pb2.Embedding, _Mapping]]] = ..., isAnomaly: _Optional[bool] = ..., info: _Optional[_Mapping[str, str]] = ..., llm: _Optional[_Union[_schema_pb2.LLM, _Mapping]] = ...) -> None: ...
