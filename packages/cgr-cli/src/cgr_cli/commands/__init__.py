"""Command bodies: each parses nothing, takes the argparse namespace, returns an exit code."""
