package sink

// ForgetPositions drops what the sink knows of its positions, as after a
// commit whose reply was lost.
func (s *PositionedNATS) ForgetPositions() {
	s.mu.Lock()
	s.last = nil
	s.mu.Unlock()
}
