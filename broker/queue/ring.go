package queue

// ring is a growable double-ended queue over a power-of-two circular buffer. The zero value
// is an empty ring. It backs both the ready messages (one ring per priority level) and the
// outstanding deliveries: pushing and popping at either end is O(1) and, once the buffer has
// grown to the working-set size, allocation-free.
type ring[T any] struct {
	buf  []T
	head int // index in buf of element 0
	n    int
}

func (r *ring[T]) len() int { return r.n }

func (r *ring[T]) mask() int { return len(r.buf) - 1 }

// at returns a pointer to element i (0 = front); valid until the ring next grows.
func (r *ring[T]) at(i int) *T { return &r.buf[(r.head+i)&r.mask()] }

func (r *ring[T]) grow() {
	c := len(r.buf) * 2
	if c == 0 {
		c = 8
	}
	nb := make([]T, c)
	if r.n > 0 {
		k := copy(nb, r.buf[r.head:])
		if k < r.n {
			copy(nb[k:], r.buf[:r.n-k])
		}
	}
	r.buf, r.head = nb, 0
}

func (r *ring[T]) pushBack(v T) {
	if r.n == len(r.buf) {
		r.grow()
	}
	r.buf[(r.head+r.n)&r.mask()] = v
	r.n++
}

func (r *ring[T]) pushFront(v T) {
	if r.n == len(r.buf) {
		r.grow()
	}
	r.head = (r.head - 1) & r.mask()
	r.buf[r.head] = v
	r.n++
}

// front returns a pointer to the first element; the ring must not be empty.
func (r *ring[T]) front() *T { return &r.buf[r.head] }

// back returns a pointer to the last element; the ring must not be empty.
func (r *ring[T]) back() *T { return &r.buf[(r.head+r.n-1)&r.mask()] }

// popFront removes and returns the first element; the ring must not be empty. The vacated
// slot is zeroed so the ring does not keep a message alive for the garbage collector.
func (r *ring[T]) popFront() T {
	var zero T
	v := r.buf[r.head]
	r.buf[r.head] = zero
	r.head = (r.head + 1) & r.mask()
	r.n--
	return v
}

// popBack removes and returns the last element; the ring must not be empty.
func (r *ring[T]) popBack() T {
	var zero T
	i := (r.head + r.n - 1) & r.mask()
	v := r.buf[i]
	r.buf[i] = zero
	r.n--
	return v
}

// insert puts v at position i (0 <= i <= len), shifting whichever side is shorter.
func (r *ring[T]) insert(i int, v T) {
	if i == 0 {
		r.pushFront(v)
		return
	}
	if i == r.n {
		r.pushBack(v)
		return
	}
	if r.n == len(r.buf) {
		r.grow()
	}
	if i < r.n-i {
		// Shift the first i elements one slot towards the front.
		r.head = (r.head - 1) & r.mask()
		for j := 0; j < i; j++ {
			*r.at(j) = *r.at(j + 1)
		}
	} else {
		// Shift elements i.. one slot towards the back.
		r.n++
		for j := r.n - 1; j > i; j-- {
			*r.at(j) = *r.at(j - 1)
		}
		r.n--
	}
	r.n++
	*r.at(i) = v
}

// clear empties the ring, keeping its buffer.
func (r *ring[T]) clear() {
	clear(r.buf)
	r.head, r.n = 0, 0
}
