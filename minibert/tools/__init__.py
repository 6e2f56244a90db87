"""Tools around the library: watch a sentence go through (trace), the tour, parity with transformers, download,
benchmark. They may use every ring; nothing in the library imports them."""
