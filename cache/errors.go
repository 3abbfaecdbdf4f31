package cache

import "errors"

var (
	// ErrUnavailable reports that Redis could not be reached (breaker open,
	// timeout, connection error) for an operation whose failure the caller
	// must know about: Invalidate and BumpEpoch. Get never returns it: when
	// Redis is unavailable Get calls the loader.
	ErrUnavailable = errors.New("cache: redis unavailable")

	// ErrInvalidConfig reports a Config or EntityConfig that New or NewEntity
	// cannot use.
	ErrInvalidConfig = errors.New("cache: invalid config")

	// ErrInvalidArgument reports a bad argument to an operation, such as an
	// invalidation at position 0 or a key of an empty kind. Nothing is
	// changed.
	ErrInvalidArgument = errors.New("cache: invalid argument")

	// ErrCorrupt reports bytes a Codec cannot decode. Get treats a corrupt
	// cached entry as a miss and never returns ErrCorrupt.
	ErrCorrupt = errors.New("cache: corrupt value")

	// ErrClosed is returned by operations on a closed Cache.
	ErrClosed = errors.New("cache: closed")

	// ErrLoaderPanicked is returned to callers that shared a load (see
	// Entity.Get) whose loader panicked; the caller that ran the loader
	// gets the panic itself.
	ErrLoaderPanicked = errors.New("cache: loader panicked")
)
