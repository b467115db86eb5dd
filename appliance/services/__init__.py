"""The daemon's parts, each a Service with one lifecycle (start, stop(timeout), problem(), the config sections it
is built from), in the order the supervisor starts them:

    base.py       Service, ServiceGroup (start in order, stop in reverse, apply a config / roll back), Context
    broker.py     the embedded room broker (mosquitto), closed by the appliance's and the displays' users
    publisher.py  the caption publisher with its on-disk queue of finals; the sink's door to it
    archive.py    the meeting record (archive writer)
    pipeline.py   models + pipeline + the room's speaker tracker; replaced pipelines drain on their own thread
    capture.py    microphone or input file on the capture thread, feeding the pipeline
    panel.py      the admin panel (its settings apply at the next start)
    display.py    the read-only display server on the room LAN
"""
