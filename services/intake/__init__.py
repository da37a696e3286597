"""intake: the HTTP API wallet apps post complaints to."""
