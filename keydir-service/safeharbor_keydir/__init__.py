"""SafeHarbor keydir-service: public-key directory with a transparency log."""
