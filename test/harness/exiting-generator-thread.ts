/** A generator thread entry that ends before it is ready (ThreadedGenerator must not wait for it forever). */
process.exit(3);
