"""Authentication, authorisation, limits and metering; see README.md for the layer rule."""
