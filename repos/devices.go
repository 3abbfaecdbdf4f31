package repos

import (
	"context"
	"errors"

	"github.com/jackc/pgx/v5"

	"github.com/hsdal/hsdal/router"
)

// Devices is the repository of users' logged-in devices. Safe for
// concurrent use.
type Devices struct{ c *core }

// Device is a live device of a live user.
type Device struct {
	UserID      string  `db:"user_id"`
	DeviceID    string  `db:"device_id"`
	DisplayName *string `db:"display_name"`
	LastSeenTS  *int64  `db:"last_seen_ts"`
	LastSeenIP  *string `db:"last_seen_ip"`
	CreatedTS   int64   `db:"created_ts"`
}

// NewDevice is a login: the device to create, or to revive if the user had
// it before (Matrix clients may reuse a device ID).
type NewDevice struct {
	UserID   string
	DeviceID string
	// DisplayName, if non-nil, replaces the stored one ("" clears it).
	DisplayName *string
	// IP, if not "", is recorded as the last-seen address, with the current
	// time as last-seen time.
	IP string
}

// DeviceTouch is a request to record that a device was seen, with what the
// caller already knows of the device (e.g. from AccessTokens.LookupToken),
// so that most calls cost no database round trip at all.
type DeviceTouch struct {
	UserID   string
	DeviceID string
	// IP is the address the device was seen from now ("" for unknown).
	IP string
	// KnownLastSeenTS and KnownLastSeenIP are the device's last-seen values
	// as the caller last read them (nil if unknown or never seen).
	KnownLastSeenTS *int64
	KnownLastSeenIP *string
}

// DevicePageRequest asks for one page of a user's devices, keyset on
// device_id.
type DevicePageRequest struct {
	UserID string
	// From is a cursor from a previous page; "" starts at an end.
	From string
	// Dir defaults to Forward (ascending device ID).
	Dir         Direction
	Limit       int
	Consistency router.Consistency
}

const deviceColumns = `d.user_id, d.device_id, d.display_name, d.last_seen_ts, d.last_seen_ip, d.created_ts`

const (
	// The INSERT ... SELECT inserts nothing (→ ErrNotFound) unless the user
	// is live and not deactivated; the FK alone would accept a hidden user.
	sqlUpsertDevice = `
INSERT INTO devices AS d (user_id, device_id, display_name, last_seen_ts, last_seen_ip, created_ts)
SELECT $1, $2, NULLIF($4, ''), CASE WHEN $5 <> '' THEN $6::bigint END, NULLIF($5, ''), $6
FROM users u WHERE u.user_id = $1 AND u.deleted_at IS NULL AND NOT u.deactivated
ON CONFLICT (user_id, device_id) DO UPDATE SET
    deleted_at   = NULL,
    display_name = CASE WHEN $3::boolean THEN EXCLUDED.display_name ELSE d.display_name END,
    last_seen_ts = COALESCE(EXCLUDED.last_seen_ts, d.last_seen_ts),
    last_seen_ip = COALESCE(EXCLUDED.last_seen_ip, d.last_seen_ip)
RETURNING ` + deviceColumns

	sqlGetDevice = `
SELECT ` + deviceColumns + `
FROM devices d JOIN users u ON u.user_id = d.user_id AND u.deleted_at IS NULL
WHERE d.user_id = $1 AND d.device_id = $2 AND d.deleted_at IS NULL`

	sqlListDevicesAsc = `
SELECT ` + deviceColumns + `
FROM devices d
WHERE d.user_id = $1 AND d.deleted_at IS NULL AND d.device_id > $2
ORDER BY d.device_id
LIMIT $3`

	sqlListDevicesDesc = `
SELECT ` + deviceColumns + `
FROM devices d
WHERE d.user_id = $1 AND d.deleted_at IS NULL AND d.device_id < $2
ORDER BY d.device_id DESC
LIMIT $3`

	// The cached list: every live device of the user, up to a bound.
	sqlListDevicesAll = `
SELECT ` + deviceColumns + `
FROM devices d
WHERE d.user_id = $1 AND d.deleted_at IS NULL
ORDER BY d.device_id
LIMIT $2`

	sqlListDevicesLast = `
SELECT ` + deviceColumns + `
FROM devices d
WHERE d.user_id = $1 AND d.deleted_at IS NULL
ORDER BY d.device_id DESC
LIMIT $2`

	// Written only when stale or the address changed, so concurrent touches
	// from several instances write once; last_seen_* are not indexed, so
	// the update is HOT (no index writes).
	sqlTouchDevice = `
UPDATE devices SET last_seen_ts = $3, last_seen_ip = COALESCE(NULLIF($4, ''), last_seen_ip)
WHERE user_id = $1 AND device_id = $2 AND deleted_at IS NULL
  AND (last_seen_ts IS NULL OR last_seen_ts <= $5 OR ($4 <> '' AND last_seen_ip IS DISTINCT FROM $4))`

	// Soft-deletes devices. Their access and refresh tokens are not
	// touched: every token read path joins the device and hides tokens of a
	// deleted device, so RestoreDevice brings back exactly the sessions
	// that were live. The live tokens' hashes are returned for cache
	// invalidation. $2 NULL means all devices; $4 is a device to keep
	// ("" none).
	sqlDeleteDevices = `
WITH d AS (
    UPDATE devices SET deleted_at = $3
    WHERE user_id = $1 AND deleted_at IS NULL
      AND ($2::text[] IS NULL OR device_id = ANY($2)) AND device_id <> $4
    RETURNING device_id
)
SELECT COALESCE((SELECT array_agg(device_id) FROM d), '{}') AS devices,
       COALESCE((SELECT array_agg(t.token_hash) FROM access_tokens t
                 WHERE t.user_id = $1 AND t.device_id IN (SELECT device_id FROM d)
                   AND t.deleted_at IS NULL), '{}') AS token_hashes`

	sqlRestoreDevice = `
UPDATE devices SET deleted_at = NULL
WHERE user_id = $1 AND device_id = $2 AND deleted_at IS NOT NULL`

	sqlDeviceTokenHashes = `
SELECT token_hash FROM access_tokens WHERE user_id = $1 AND device_id = $2 AND deleted_at IS NULL`

	// A login that reuses the ID of a soft-deleted device must not revive
	// the sessions that were logged out with it: first revoke them (with
	// the device's deletion time), then upsert.
	sqlDeletedDeviceAt = `
SELECT deleted_at FROM devices WHERE user_id = $1 AND device_id = $2 AND deleted_at IS NOT NULL
FOR UPDATE`

	sqlRevokeDeviceTokens = `
WITH t AS (
    UPDATE access_tokens SET deleted_at = $3
    WHERE user_id = $1 AND device_id = $2 AND deleted_at IS NULL
    RETURNING token_hash
), r AS (
    UPDATE refresh_tokens SET deleted_at = $3
    WHERE user_id = $1 AND device_id = $2 AND deleted_at IS NULL
)
SELECT COALESCE(array_agg(token_hash), '{}') FROM t`
)

// UpsertDevice creates a device for a live, non-deactivated user, or revives
// and updates the user's device with that ID (clearing a soft delete; the
// access and refresh tokens it had when deleted are revoked, not revived).
//
// Errors: ErrInvalidArgument; ErrNotFound if the user is absent,
// soft-deleted or deactivated; ErrUnavailable.
func (d *Devices) UpsertDevice(ctx context.Context, nd NewDevice) (Device, router.Token, error) {
	if err := checkUserID("user_id", nd.UserID, false); err != nil {
		return Device{}, router.Token{}, err
	}
	if err := checkOpaque("device_id", nd.DeviceID, MaxIDBytes); err != nil {
		return Device{}, router.Token{}, err
	}
	if nd.DisplayName != nil {
		if err := checkText("display_name", *nd.DisplayName, MaxDisplayNameBytes); err != nil {
			return Device{}, router.Token{}, err
		}
	}
	if err := checkOpaqueOrEmpty("ip", nd.IP, 64); err != nil {
		return Device{}, router.Token{}, err
	}
	var out Device
	tok, err := write(ctx, d.c, "devices.upsert", func(ctx context.Context, tx pgx.Tx) ([]Change, error) {
		changes := []Change{{Kind: ChangeDevices, Key: nd.UserID, Key2: nd.DeviceID},
			{Kind: ChangeTokensOfDevice, Key: nd.UserID, Key2: nd.DeviceID}}
		var deletedAt int64
		switch err := tx.QueryRow(ctx, sqlDeletedDeviceAt, nd.UserID, nd.DeviceID).Scan(&deletedAt); {
		case err == nil:
			var hashes [][]byte
			if err := tx.QueryRow(ctx, sqlRevokeDeviceTokens, nd.UserID, nd.DeviceID, deletedAt).Scan(&hashes); err != nil {
				return nil, err
			}
			changes = appendTokenChanges(changes, hashes)
		case !errors.Is(err, pgx.ErrNoRows):
			return nil, err
		}
		rows, _ := tx.Query(ctx, sqlUpsertDevice, nd.UserID, nd.DeviceID, nd.DisplayName != nil,
			deref(nd.DisplayName), nd.IP, d.c.nowMS())
		var err error
		out, err = pgx.CollectExactlyOneRow(rows, pgx.RowToStructByName[Device])
		return changes, err
	})
	return out, tok, err
}

// GetDevice returns a live device of a live user.
//
// Errors: ErrInvalidArgument, ErrNotFound, ErrUnavailable.
func (d *Devices) GetDevice(ctx context.Context, userID, deviceID string, opts ...router.Consistency) (Device, error) {
	cons, err := consistency(opts)
	if err != nil {
		return Device{}, err
	}
	if err := checkUserID("user_id", userID, false); err != nil {
		return Device{}, err
	}
	if err := checkOpaque("device_id", deviceID, MaxIDBytes); err != nil {
		return Device{}, err
	}
	v, _, err := read(ctx, d.c, "devices.get", cons, false, func(ctx context.Context, q router.Querier) (Device, error) {
		rows, _ := q.Query(ctx, sqlGetDevice, userID, deviceID)
		return pgx.CollectExactlyOneRow(rows, pgx.RowToStructByName[Device])
	})
	return v, err
}

// ListDevices returns one page of a user's live devices, ascending device
// ID by default.
//
// Errors: ErrInvalidArgument, ErrInvalidCursor, ErrNotFound (the user is
// absent or soft-deleted), ErrUnavailable.
func (d *Devices) ListDevices(ctx context.Context, req DevicePageRequest) (Page[Device], error) {
	if err := checkUserID("user_id", req.UserID, false); err != nil {
		return Page[Device]{}, err
	}
	pg, err := d.c.pageSetup("from", req.From, req.Dir, Forward, req.Limit, kindDevices, req.UserID, stringEdge)
	if err != nil {
		return Page[Device]{}, err
	}
	if cs := d.c.caches; cs != nil {
		l, live, err := cachedGet(ctx, cs, cs.devices, req.Consistency, req.UserID, loadDevices(d.c, req.UserID, cs.maxDevices))
		if err != nil {
			return Page[Device]{}, err
		}
		if !live {
			return Page[Device]{}, notFound("devices.list")
		}
		if items, ok := devicesPage(l, pg); ok {
			return finishPage(d.c, pg, items, false, func(x Device) cursorPos { return cursorPos{S: x.DeviceID} }), nil
		}
		// Too many devices to cache, or a cursor the cached list cannot
		// place: read the page itself.
	}
	items, _, err := d.fetchDevices(ctx, req.Consistency, req.UserID, pg)
	if err != nil {
		return Page[Device]{}, err
	}
	return finishPage(d.c, pg, items, false, func(x Device) cursorPos { return cursorPos{S: x.DeviceID} }), nil
}

// fetchDevices is the cacheable read behind ListDevices.
func (d *Devices) fetchDevices(ctx context.Context, cons router.Consistency, userID string, pg pageState) ([]Device, router.ReadInfo, error) {
	return read(ctx, d.c, "devices.list", cons, false, func(ctx context.Context, q router.Querier) ([]Device, error) {
		sql, args := sqlListDevicesAsc, []any{userID, pg.start.S, pg.limit + 1}
		switch {
		case pg.dir == Forward:
		case pg.hasFrom:
			sql = sqlListDevicesDesc
		default:
			sql, args = sqlListDevicesLast, []any{userID, pg.limit + 1}
		}
		return queryScoped(ctx, q, sqlUserLive, userID, sql, args, pgx.RowToStructByName[Device])
	})
}

// loadDevices is the cached read behind ListDevices: the user's liveness and
// up to max+1 live devices (more than max: cached as large).
func loadDevices(c *core, userID string, max int) stampedLoad[deviceList] {
	return func(ctx context.Context, cons router.Consistency) (deviceList, bool, router.ReadInfo, router.LSN, error) {
		return readStamped(ctx, c, "devices.list", cons,
			func(b *pgx.Batch) {
				b.Queue(sqlUserLive, userID)
				b.Queue(sqlListDevicesAll, userID, max+1)
			},
			func(br pgx.BatchResults) (deviceList, bool, error) {
				var live bool
				if err := br.QueryRow().Scan(&live); err != nil {
					return deviceList{}, false, err
				}
				rows, err := br.Query()
				if err != nil {
					return deviceList{}, false, err
				}
				items, err := pgx.CollectRows(rows, pgx.RowToStructByName[Device])
				switch {
				case err != nil:
					return deviceList{}, false, err
				case !live:
					return deviceList{}, false, nil
				case len(items) > max:
					return deviceList{Large: true}, true, nil
				}
				return deviceList{Devices: items}, true, nil
			})
	}
}

// devicesPage cuts one page (up to limit+1 rows, like the page queries)
// from a cached device list, which is in the database's device_id order,
// copying the rows (the list may be shared by the in-process tier).
// A cursor is placed by finding its device in the list, so no string
// comparison (whose collation only the database knows) is needed; ok is
// false when the list is large or the cursor's device is not in it.
func devicesPage(l deviceList, pg pageState) (items []Device, ok bool) {
	if l.Large {
		return nil, false
	}
	list := l.Devices
	at := -1 // the cursor's index
	if pg.hasFrom {
		for i := range list {
			if list[i].DeviceID == pg.start.S {
				at = i
				break
			}
		}
		if at < 0 {
			return nil, false
		}
	}
	n := pg.limit + 1
	if pg.dir == Forward {
		from := at + 1
		src := list[from:min(from+n, len(list))]
		items = make([]Device, len(src))
		for i := range src {
			items[i] = cloneDevice(src[i])
		}
		return items, true
	}
	end := len(list)
	if pg.hasFrom {
		end = at
	}
	items = make([]Device, 0, min(n, end))
	for i := end - 1; i >= 0 && len(items) < n; i-- {
		items = append(items, cloneDevice(list[i]))
	}
	return items, true
}

// TouchDevice records that a device was seen now from t.IP, cheaply: when
// the caller's known last-seen time is younger than the configured
// DeviceTouchInterval and the address is unchanged it returns at once with
// no database round trip; otherwise one conditional UPDATE writes only if
// the stored value is stale too (so concurrent instances write once, and a
// write is a HOT update of unindexed columns). It reports whether it wrote.
// A missing or deleted device is not an error: nothing is written.
//
// Errors: ErrInvalidArgument, ErrUnavailable.
func (d *Devices) TouchDevice(ctx context.Context, t DeviceTouch) (bool, router.Token, error) {
	if err := checkUserID("user_id", t.UserID, false); err != nil {
		return false, router.Token{}, err
	}
	if err := checkOpaque("device_id", t.DeviceID, MaxIDBytes); err != nil {
		return false, router.Token{}, err
	}
	if err := checkOpaqueOrEmpty("ip", t.IP, 64); err != nil {
		return false, router.Token{}, err
	}
	now := d.c.nowMS()
	threshold := now - d.c.touchInterval.Milliseconds()
	sameIP := t.IP == "" || t.KnownLastSeenIP != nil && *t.KnownLastSeenIP == t.IP
	if t.KnownLastSeenTS != nil && *t.KnownLastSeenTS > threshold && sameIP {
		return false, router.Token{}, nil
	}
	touched := false
	tok, err := write(ctx, d.c, "devices.touch", func(ctx context.Context, tx pgx.Tx) ([]Change, error) {
		tag, err := tx.Exec(ctx, sqlTouchDevice, t.UserID, t.DeviceID, now, t.IP, threshold)
		if err != nil {
			return nil, err
		}
		touched = tag.RowsAffected() > 0
		if !touched {
			return nil, nil
		}
		return []Change{{Kind: ChangeDevices, Key: t.UserID, Key2: t.DeviceID},
			{Kind: ChangeTokensOfDevice, Key: t.UserID, Key2: t.DeviceID}}, nil
	})
	return touched, tok, err
}

// DeleteDevice soft-deletes one live device of a user; its access and
// refresh tokens stop authenticating with it (logout).
//
// Errors: ErrInvalidArgument, ErrNotFound (no live device), ErrUnavailable.
func (d *Devices) DeleteDevice(ctx context.Context, userID, deviceID string) (router.Token, error) {
	if err := checkOpaque("device_id", deviceID, MaxIDBytes); err != nil {
		return router.Token{}, err
	}
	n, tok, err := d.deleteDevices(ctx, "devices.delete", userID, []string{deviceID}, "")
	if err == nil && n == 0 {
		err = wrap("devices.delete", pgx.ErrNoRows)
	}
	return tok, err
}

// DeleteDevices soft-deletes the listed live devices of a user (and so
// their tokens), and returns how many were deleted (absent IDs are skipped).
//
// Errors: ErrInvalidArgument, ErrUnavailable.
func (d *Devices) DeleteDevices(ctx context.Context, userID string, deviceIDs []string) (int, router.Token, error) {
	if len(deviceIDs) > MaxBatchIDs {
		return 0, router.Token{}, invalid("device_ids", "%d IDs; at most %d per call", len(deviceIDs), MaxBatchIDs)
	}
	for i, id := range deviceIDs {
		if err := checkOpaque("device_ids["+itoa(i)+"]", id, MaxIDBytes); err != nil {
			return 0, router.Token{}, err
		}
	}
	if deviceIDs == nil {
		deviceIDs = []string{} // nil would mean "all"
	}
	return d.deleteDevices(ctx, "devices.delete_many", userID, deviceIDs, "")
}

// DeleteAllDevices soft-deletes every live device of a user (except
// keepDeviceID, if not "") with their tokens ("log out everywhere"), and
// returns how many were deleted.
//
// Errors: ErrInvalidArgument, ErrUnavailable.
func (d *Devices) DeleteAllDevices(ctx context.Context, userID, keepDeviceID string) (int, router.Token, error) {
	if err := checkOpaqueOrEmpty("keep_device_id", keepDeviceID, MaxIDBytes); err != nil {
		return 0, router.Token{}, err
	}
	return d.deleteDevices(ctx, "devices.delete_all", userID, nil, keepDeviceID)
}

func (d *Devices) deleteDevices(ctx context.Context, op, userID string, ids []string, keep string) (int, router.Token, error) {
	if err := checkUserID("user_id", userID, false); err != nil {
		return 0, router.Token{}, err
	}
	n := 0
	tok, err := write(ctx, d.c, op, func(ctx context.Context, tx pgx.Tx) ([]Change, error) {
		var devices []string
		var hashes [][]byte
		if err := tx.QueryRow(ctx, sqlDeleteDevices, userID, ids, d.c.nowMS(), keep).
			Scan(&devices, &hashes); err != nil {
			return nil, err
		}
		n = len(devices)
		changes := make([]Change, 0, 2*len(devices)+len(hashes))
		for _, dev := range devices {
			changes = append(changes, Change{Kind: ChangeDevices, Key: userID, Key2: dev},
				Change{Kind: ChangeTokensOfDevice, Key: userID, Key2: dev})
		}
		return appendTokenChanges(changes, hashes), nil
	})
	return n, tok, err
}

// RestoreDevice undoes the soft delete of a device; the tokens that were
// live when it was deleted authenticate again (tokens revoked on their own
// stay revoked).
//
// Errors: ErrInvalidArgument, ErrNotFound (no soft-deleted device),
// ErrUnavailable.
func (d *Devices) RestoreDevice(ctx context.Context, userID, deviceID string) (router.Token, error) {
	if err := checkUserID("user_id", userID, false); err != nil {
		return router.Token{}, err
	}
	if err := checkOpaque("device_id", deviceID, MaxIDBytes); err != nil {
		return router.Token{}, err
	}
	return write(ctx, d.c, "devices.restore", func(ctx context.Context, tx pgx.Tx) ([]Change, error) {
		if err := execOne(ctx, tx, sqlRestoreDevice, userID, deviceID); err != nil {
			return nil, err
		}
		rows, _ := tx.Query(ctx, sqlDeviceTokenHashes, userID, deviceID)
		hashes, err := pgx.CollectRows(rows, pgx.RowTo[[]byte])
		return appendTokenChanges([]Change{{Kind: ChangeDevices, Key: userID, Key2: deviceID},
			{Kind: ChangeTokensOfDevice, Key: userID, Key2: deviceID}}, hashes), err
	})
}

func appendTokenChanges(changes []Change, hashes [][]byte) []Change {
	for _, h := range hashes {
		changes = append(changes, Change{Kind: ChangeAccessToken, Key: string(h)})
	}
	return changes
}
