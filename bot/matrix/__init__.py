"""The matrix-nio side: client, sync loop, sending, onboarding, room-mode enforcement."""
