//go:build windows

package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/windows/svc"
	"golang.org/x/sys/windows/svc/eventlog"
	"golang.org/x/sys/windows/svc/mgr"
)

func init() {
	register("service", command{summary: "install, uninstall, start or stop oauthrelay as a Windows service", run: runService})
}

const serviceUsage = `Usage: oauthrelay service <action> [flags]

Actions (run from an elevated prompt):
  install     register the service (starts automatically at boot)
              flags: -name, -config FILE, -log FILE, -account ACCOUNT
  uninstall   remove the service
  start       start it
  stop        stop it (unfinished mail stays queued)
  run         what the service manager runs; not for interactive use

Reload the configuration without a restart: sc control oauthrelay paramchange
`

func runService(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(stderr, serviceUsage)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	action := args[0]
	fs := newFlags("service "+action, stderr)
	name := fs.String("name", "oauthrelay", "service name")
	cfgPath := fs.String("config", defaultConfig, "configuration file")
	logPath := fs.String("log", filepath.Join(programData(), "oauthrelay.log"), "log file (the service has no console)")
	account := fs.String("account", `NT AUTHORITY\LocalService`, "account the service runs as (install)")
	if err := fs.Parse(args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	var err error
	switch action {
	case "install":
		err = installService(*name, *cfgPath, *logPath, *account, stdout)
	case "uninstall":
		err = withService(*name, func(s *mgr.Service) error {
			if err := s.Delete(); err != nil {
				return err
			}
			_ = eventlog.Remove(*name)
			fmt.Fprintf(stdout, "service %s removed; the spool and configuration are left in place\n", *name)
			return nil
		})
	case "start":
		err = withService(*name, func(s *mgr.Service) error {
			if err := s.Start(); err != nil {
				return err
			}
			fmt.Fprintf(stdout, "service %s started; its log is %s\n", *name, *logPath)
			return nil
		})
	case "stop":
		err = withService(*name, func(s *mgr.Service) error { return stopService(s, *name, stdout) })
	case "run":
		return runAsService(*name, *cfgPath, *logPath, stderr)
	default:
		fmt.Fprintf(stderr, "oauthrelay service: unknown action %q\n\n%s", action, serviceUsage)
		return 2
	}
	if err != nil {
		fmt.Fprintf(stderr, "oauthrelay service %s: %v\n", action, err)
		if errors.Is(err, os.ErrPermission) || isAccessDenied(err) {
			fmt.Fprintln(stderr, "  run it from an elevated prompt (Run as administrator)")
		}
		return 1
	}
	return 0
}

func isAccessDenied(err error) bool {
	// ERROR_ACCESS_DENIED matches os.ErrPermission on Windows.
	return errors.Is(err, os.ErrPermission)
}

func withService(name string, f func(*mgr.Service) error) error {
	m, err := mgr.Connect()
	if err != nil {
		return fmt.Errorf("cannot connect to the service manager: %w", err)
	}
	defer m.Disconnect()
	s, err := m.OpenService(name)
	if err != nil {
		return fmt.Errorf("service %s is not installed (oauthrelay service install): %w", name, err)
	}
	defer s.Close()
	return f(s)
}

func installService(name, cfgPath, logPath, account string, stdout io.Writer) error {
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	cfgPath, err = filepath.Abs(cfgPath)
	if err != nil {
		return err
	}
	logPath, err = filepath.Abs(logPath)
	if err != nil {
		return err
	}
	if _, err := os.Stat(cfgPath); err != nil {
		return fmt.Errorf("configuration %s: %w (write it first; config.toml.example explains every key)", cfgPath, err)
	}
	m, err := mgr.Connect()
	if err != nil {
		return fmt.Errorf("cannot connect to the service manager: %w", err)
	}
	defer m.Disconnect()
	if s, err := m.OpenService(name); err == nil {
		s.Close()
		return fmt.Errorf("service %s already exists (oauthrelay service uninstall first)", name)
	}
	s, err := m.CreateService(name, exe, mgr.Config{
		DisplayName:      "oauthrelay SMTP relay to Microsoft 365",
		Description:      "Accepts SMTP from legacy applications and delivers it to Microsoft 365 with OAuth2 (XOAUTH2).",
		StartType:        mgr.StartAutomatic,
		DelayedAutoStart: true,
		ServiceStartName: account,
	}, "service", "run", "-name", name, "-config", cfgPath, "-log", logPath)
	if err != nil {
		return err
	}
	defer s.Close()
	// Restart after a crash: 5 s, 30 s, then every minute.
	_ = s.SetRecoveryActions([]mgr.RecoveryAction{
		{Type: mgr.ServiceRestart, Delay: 5 * time.Second},
		{Type: mgr.ServiceRestart, Delay: 30 * time.Second},
		{Type: mgr.ServiceRestart, Delay: time.Minute},
	}, uint32((24 * time.Hour).Seconds()))
	_ = eventlog.InstallAsEventCreate(name, eventlog.Error|eventlog.Warning|eventlog.Info)
	fmt.Fprintf(stdout, "service %s installed: runs %s as %s with %s, logs to %s\n", name, exe, account, cfgPath, logPath)
	fmt.Fprintf(stdout, "give %s modify rights on the spool and the log directory, for example:\n  icacls \"%s\" /grant \"%s:(OI)(CI)M\"\n", account, programData(), account)
	fmt.Fprintf(stdout, "then: oauthrelay service start -name %s\n", name)
	return nil
}

func stopService(s *mgr.Service, name string, stdout io.Writer) error {
	st, err := s.Control(svc.Stop)
	if err != nil {
		return err
	}
	deadline := time.Now().Add(60 * time.Second)
	for st.State != svc.Stopped {
		if time.Now().After(deadline) {
			return fmt.Errorf("service %s did not stop within 60 s", name)
		}
		time.Sleep(300 * time.Millisecond)
		if st, err = s.Query(); err != nil {
			return err
		}
	}
	fmt.Fprintf(stdout, "service %s stopped; unfinished mail stays queued\n", name)
	return nil
}

// runAsService is the service's main: serve, with stop and paramchange
// from the service manager in place of SIGTERM and SIGHUP.
func runAsService(name, cfgPath, logPath string, stderr io.Writer) int {
	isSvc, err := svc.IsWindowsService()
	if err != nil || !isSvc {
		fmt.Fprintln(stderr, "oauthrelay service run: this is what the service manager starts; to run the relay in a console use `oauthrelay serve -config FILE`")
		return 2
	}
	// Without its log file the service has nowhere to explain itself but
	// the event log.
	logf, err := func() (*os.File, error) {
		if err := os.MkdirAll(filepath.Dir(logPath), 0o700); err != nil {
			return nil, err
		}
		return os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	}()
	if err != nil {
		if el, eerr := eventlog.Open(name); eerr == nil {
			el.Error(1, fmt.Sprintf("oauthrelay cannot open its log file %s: %v", logPath, err))
			el.Close()
		}
		return 1
	}
	defer logf.Close()
	h := &serviceHandler{cfgPath: cfgPath, log: logf}
	if err := svc.Run(name, h); err != nil {
		fmt.Fprintf(logf, "service %s failed: %v\n", name, err)
		return 1
	}
	return h.code
}

type serviceHandler struct {
	cfgPath string
	log     io.Writer
	code    int
}

// Execute implements svc.Handler.
func (h *serviceHandler) Execute(_ []string, req <-chan svc.ChangeRequest, status chan<- svc.Status) (bool, uint32) {
	status <- svc.Status{State: svc.StartPending}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	reload := make(chan struct{}, 1)
	done := make(chan int, 1)
	go func() { done <- serve(ctx, h.cfgPath, h.log, reload) }()
	accepts := svc.AcceptStop | svc.AcceptShutdown | svc.AcceptParamChange
	status <- svc.Status{State: svc.Running, Accepts: accepts}
	for {
		select {
		case code := <-done:
			h.code = code
			return code != 0, uint32(code)
		case c := <-req:
			switch c.Cmd {
			case svc.Interrogate:
				status <- c.CurrentStatus
			case svc.Stop, svc.Shutdown:
				status <- svc.Status{State: svc.StopPending, WaitHint: 60000}
				cancel()
				code := <-done
				h.code = code
				return code != 0, uint32(code)
			case svc.ParamChange:
				select {
				case reload <- struct{}{}:
				default:
				}
				status <- svc.Status{State: svc.Running, Accepts: accepts}
			}
		}
	}
}
