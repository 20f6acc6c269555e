"""Media layer: probe files, plan chunks, sample frames (files now; live RTSP sources plug in here)."""
