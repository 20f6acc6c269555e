"""Media layer: probe files, plan chunks, sample frames from files and live RTSP sources."""
