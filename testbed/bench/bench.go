// Package bench measures the edge against a raw JetStream pull consumer with
// the same sink and no dedupe, on the same stream, machine and run.
package bench
