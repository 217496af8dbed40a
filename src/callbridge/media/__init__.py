"""callbridge.media: the media plane (rtpengine), audio files, recordings and G.711."""
