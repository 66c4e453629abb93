"""Live video: RTMP ingest, one ffmpeg per publishing session writing HLS, the stream's
state in the datastore, and the routes that serve the playlist and segments.

The media process (``newretail media``) owns ingest and ffmpeg; the web process serves
``/media/{session_id}/...`` from the same directory and answers the stream's state.
"""
