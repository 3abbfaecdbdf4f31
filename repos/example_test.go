package repos_test

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/hsdal/hsdal/repos"
	"github.com/hsdal/hsdal/router"
)

// These examples run against a real PostgreSQL: HSDAL_PRIMARY_DSN (set by
// this package's TestMain to its local test cluster). IDs a homeserver
// would generate are random, so the examples can run any number of times.

// Registering a user.
func ExampleUsers_CreateUser() {
	ctx := context.Background()
	r, err := router.New(ctx, router.Config{PrimaryDSN: os.Getenv("HSDAL_PRIMARY_DSN")})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer r.Close()
	rp, err := repos.New(r, repos.Config{CursorKey: []byte(os.Getenv("HSDAL_CURSOR_KEY"))})
	if err != nil {
		fmt.Println(err)
		return
	}

	// A session makes every later read of this request see its writes.
	ctx = router.WithSession(ctx, router.Token{})
	userID := "@alice-" + strings.ToLower(rand.Text()[:8]) + ":example.org"
	name := "Alice"
	if _, _, err := rp.Users.CreateUser(ctx, repos.NewUser{UserID: userID, DisplayName: &name}); err != nil {
		fmt.Println(err)
		return
	}
	u, err := rp.Users.GetUser(ctx, userID)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("registered", *u.DisplayName)

	_, _, err = rp.Users.CreateUser(ctx, repos.NewUser{UserID: userID})
	fmt.Println("taken:", errors.Is(err, repos.ErrConflict))

	_, _, err = rp.Users.CreateUser(ctx, repos.NewUser{UserID: "@Alice:example.org"})
	var bad *repos.ArgumentError
	fmt.Println("rejected field:", errors.As(err, &bad) && bad.Field == "user_id")
	// Output:
	// registered Alice
	// taken: true
	// rejected field: true
}

// Logging in a device and authenticating its access token.
func ExampleAccessTokens_LookupToken() {
	ctx := context.Background()
	r, err := router.New(ctx, router.Config{PrimaryDSN: os.Getenv("HSDAL_PRIMARY_DSN")})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer r.Close()
	rp, err := repos.New(r, repos.Config{})
	if err != nil {
		fmt.Println(err)
		return
	}

	userID := "@bob-" + strings.ToLower(rand.Text()[:8]) + ":example.org"
	if _, _, err := rp.Users.CreateUser(ctx, repos.NewUser{UserID: userID}); err != nil {
		fmt.Println(err)
		return
	}
	// Login: (re)create the device, mint a token, store only its hash.
	deviceID := rand.Text()[:10]
	if _, _, err := rp.Devices.UpsertDevice(ctx, repos.NewDevice{UserID: userID, DeviceID: deviceID, IP: "192.0.2.7"}); err != nil {
		fmt.Println(err)
		return
	}
	raw, err := repos.GenerateToken()
	if err != nil {
		fmt.Println(err)
		return
	}
	tok, err := rp.AccessTokens.CreateToken(ctx, repos.NewAccessToken{Token: raw, UserID: userID, DeviceID: deviceID})
	if err != nil {
		fmt.Println(err)
		return
	}
	// The client sends raw with its next request, maybe to another
	// instance; the consistency token (tok.Encode()) can travel with it so
	// the lookup sees the login even on a lagging replica.
	owner, err := rp.AccessTokens.LookupToken(ctx, raw, router.ReadYourWrites(tok))
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("authenticated:", owner.UserID == userID, *owner.DeviceID == deviceID)

	// Logout deletes the device; its tokens stop working.
	if _, err := rp.Devices.DeleteDevice(ctx, userID, deviceID); err != nil {
		fmt.Println(err)
		return
	}
	_, err = rp.AccessTokens.LookupToken(ctx, raw, router.Strong())
	fmt.Println("after logout:", errors.Is(err, repos.ErrNotFound))
	// Output:
	// authenticated: true true
	// after logout: true
}

// Creating a room, joining it and checking membership.
func ExampleMemberships_Join() {
	ctx := context.Background()
	r, err := router.New(ctx, router.Config{PrimaryDSN: os.Getenv("HSDAL_PRIMARY_DSN")})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer r.Close()
	rp, err := repos.New(r, repos.Config{})
	if err != nil {
		fmt.Println(err)
		return
	}
	ctx = router.WithSession(ctx, router.Token{})

	creator, guest := "@carol:example.org", "@dave:remote.example" // remote users need no users row
	roomID := "!" + rand.Text() + ":example.org"
	if _, _, err := rp.Rooms.CreateRoom(ctx, repos.NewRoom{RoomID: roomID, Creator: creator}); err != nil {
		fmt.Println(err)
		return
	}
	if _, _, err := rp.Memberships.Join(ctx, roomID, creator); err != nil {
		fmt.Println(err)
		return
	}
	if _, _, err := rp.Memberships.Invite(ctx, roomID, creator, guest); err != nil {
		fmt.Println(err)
		return
	}
	if _, _, err := rp.Memberships.Join(ctx, roomID, guest); err != nil {
		fmt.Println(err)
		return
	}
	joined, _ := rp.Memberships.IsJoined(ctx, roomID, guest)
	counts, _ := rp.Memberships.CountMembers(ctx, roomID)
	fmt.Println("joined:", joined, "members:", counts.Joined)

	_, _, err = rp.Memberships.Ban(ctx, roomID, creator, guest, "spam")
	fmt.Println("ban:", err)
	_, _, err = rp.Memberships.Join(ctx, roomID, guest)
	fmt.Println("banned user joins:", errors.Is(err, repos.ErrConflict))
	// Output:
	// joined: true members: 2
	// ban: <nil>
	// banned user joins: true
}

// Sending messages to a room and paging them like Matrix /messages.
func ExampleEvents_PageEvents() {
	ctx := context.Background()
	r, err := router.New(ctx, router.Config{PrimaryDSN: os.Getenv("HSDAL_PRIMARY_DSN")})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer r.Close()
	rp, err := repos.New(r, repos.Config{})
	if err != nil {
		fmt.Println(err)
		return
	}
	ctx = router.WithSession(ctx, router.Token{})

	sender := "@erin:example.org"
	roomID := "!" + rand.Text() + ":example.org"
	if _, _, err := rp.Rooms.CreateRoom(ctx, repos.NewRoom{RoomID: roomID, Creator: sender}); err != nil {
		fmt.Println(err)
		return
	}
	for i := 1; i <= 5; i++ {
		content, _ := json.Marshal(map[string]string{"msgtype": "m.text", "body": fmt.Sprint("hello ", i)})
		if _, _, err := rp.Events.AppendEvent(ctx, repos.NewEvent{
			EventID: "$" + rand.Text() + ":example.org", RoomID: roomID, Sender: sender,
			Type: "m.room.message", Content: content,
		}); err != nil {
			fmt.Println(err)
			return
		}
	}
	// dir=b from the live edge, two at a time, following Next.
	req := repos.EventPageRequest{RoomID: roomID, Dir: repos.Backward, Limit: 2}
	for {
		page, err := rp.Events.PageEvents(ctx, req)
		if err != nil {
			fmt.Println(err)
			return
		}
		var bodies []string
		for _, e := range page.Items {
			var c struct{ Body string }
			_ = json.Unmarshal(e.Content, &c)
			bodies = append(bodies, c.Body)
		}
		fmt.Println(strings.Join(bodies, ", "))
		if page.Next == "" {
			break
		}
		req.From = page.Next // opaque, signed; also valid on other instances sharing CursorKey
	}
	// Output:
	// hello 5, hello 4
	// hello 3, hello 2
	// hello 1
}

// A private conversation: one session per pair, newest-first pages, unread
// counts.
func ExamplePrivateMessages_SendMessage() {
	ctx := context.Background()
	r, err := router.New(ctx, router.Config{PrimaryDSN: os.Getenv("HSDAL_PRIMARY_DSN")})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer r.Close()
	rp, err := repos.New(r, repos.Config{})
	if err != nil {
		fmt.Println(err)
		return
	}
	ctx = router.WithSession(ctx, router.Token{})

	suffix := strings.ToLower(rand.Text()[:8])
	alice, bob := "@alice-"+suffix+":example.org", "@bob-"+suffix+":example.org"
	for _, u := range []string{alice, bob} {
		if _, _, err := rp.Users.CreateUser(ctx, repos.NewUser{UserID: u}); err != nil {
			fmt.Println(err)
			return
		}
	}
	s, _, _, err := rp.PrivateMessages.GetOrCreateSession(ctx, alice, bob)
	if err != nil {
		fmt.Println(err)
		return
	}
	same, _, _, _ := rp.PrivateMessages.GetOrCreateSession(ctx, bob, alice)
	fmt.Println("one session per pair:", same.ID == s.ID)

	for _, body := range []string{`{"body":"hi"}`, `{"body":"lunch?"}`} {
		if _, _, err := rp.PrivateMessages.SendMessage(ctx, s.ID, alice, json.RawMessage(body)); err != nil {
			fmt.Println(err)
			return
		}
	}
	n, _ := rp.PrivateMessages.UnreadCount(ctx, s.ID, bob)
	fmt.Println("bob has unread:", n)

	page, _ := rp.PrivateMessages.PageMessages(ctx, repos.MessagePageRequest{SessionID: s.ID, Limit: 1})
	fmt.Println("newest:", string(page.Items[0].Content))
	_, _, _ = rp.PrivateMessages.MarkRead(ctx, s.ID, bob, page.Items[0].ID)
	n, _ = rp.PrivateMessages.UnreadCount(ctx, s.ID, bob)
	fmt.Println("after reading:", n)
	// Output:
	// one session per pair: true
	// bob has unread: 2
	// newest: {"body": "lunch?"}
	// after reading: 0
}
