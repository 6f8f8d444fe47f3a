package pgsink

// SetBeforeCommit makes f run inside each batch's transaction before its
// commit (a pause there is an owner paused holding its position row).
func (s *Sink) SetBeforeCommit(f func()) { s.beforeCommit = f }
