"""Media in: probing and decoding with ffmpeg, and the decoded-audio cache the later stages read."""
