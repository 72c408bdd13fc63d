package bootstrap_test

import (
	"context"
	"fmt"
	"strings"

	"go.uber.org/dig"

	"github.com/gocqrs/cqrs/bootstrap"
	"github.com/gocqrs/cqrs/events"
	"github.com/gocqrs/cqrs/mediator"
	"github.com/gocqrs/cqrs/requests"
)

// RegisterUser is a command answered by the new user's ID.
type RegisterUser struct {
	requests.Returns[string]
	Email string
}

// UserRegistered is the domain event RegisterUser emits.
type UserRegistered struct {
	ID    string
	Email string
}

// Users is a dependency provided by the container.
type Users struct{ emails []string }

func NewUsers() *Users { return &Users{} }

// Mailer is another dependency.
type Mailer struct{ prefix string }

func NewMailer() *Mailer { return &Mailer{prefix: "welcome mail to"} }

// RegisterUserHandler handles RegisterUser; its constructor's parameters come
// from the container.
type RegisterUserHandler struct{ users *Users }

func NewRegisterUserHandler(users *Users) *RegisterUserHandler {
	return &RegisterUserHandler{users: users}
}

func (h *RegisterUserHandler) Handle(_ context.Context, cmd RegisterUser) (string, []events.Event, error) {
	h.users.emails = append(h.users.emails, cmd.Email)
	id := fmt.Sprintf("user-%d", len(h.users.emails))
	// The handler emits events by returning them with the response.
	return id, []events.Event{UserRegistered{ID: id, Email: cmd.Email}}, nil
}

// SendWelcome handles UserRegistered.
type SendWelcome struct{ mailer *Mailer }

func NewSendWelcome(m *Mailer) *SendWelcome { return &SendWelcome{mailer: m} }

func (h *SendWelcome) Handle(_ context.Context, e UserRegistered) ([]events.Event, error) {
	fmt.Println(h.mailer.prefix, e.Email, "for", e.ID)
	return nil, nil
}

func ExampleBootstrap() {
	c := dig.New()
	for _, ctor := range []any{NewUsers, NewMailer} {
		if err := c.Provide(ctor); err != nil {
			panic(err)
		}
	}

	var startup []string
	m, err := bootstrap.Bootstrap(c,
		bootstrap.WithCommands(func(r *requests.Map) {
			requests.Bind[RegisterUser](r, NewRegisterUserHandler)
		}),
		bootstrap.WithDomainEvents(func(e *events.Map) {
			events.Bind[UserRegistered](e, NewSendWelcome)
		}),
		bootstrap.WithConcurrentEventHandling(false), // deterministic output
		bootstrap.WithOnStartup(func() error {
			startup = append(startup, "migrations applied")
			return nil
		}),
	)
	if err != nil {
		fmt.Println("bootstrap:", err)
		return
	}
	fmt.Println("started:", strings.Join(startup, ", "))

	ctx := context.Background()
	for _, email := range []string{"ada@example.com", "alan@example.com"} {
		// The response type, string, is inferred from RegisterUser.
		id, err := mediator.Send(ctx, m, RegisterUser{Email: email})
		if err != nil {
			fmt.Println("send:", err)
			return
		}
		// Send returns after the event handlers have run.
		fmt.Println("registered", id)
	}

	// Output:
	// started: migrations applied
	// welcome mail to ada@example.com for user-1
	// registered user-1
	// welcome mail to alan@example.com for user-2
	// registered user-2
}

func ExampleBootstrap_missingDependency() {
	c := dig.New() // *Users is not provided

	_, err := bootstrap.Bootstrap(c,
		bootstrap.WithCommands(func(r *requests.Map) {
			requests.Bind[RegisterUser](r, NewRegisterUserHandler)
		}),
	)

	// Bootstrap fails, not the first request.
	fmt.Println(err != nil)
	fmt.Println(strings.Contains(err.Error(), "*bootstrap_test.Users"))
	// Output:
	// true
	// true
}
