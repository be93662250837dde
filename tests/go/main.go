// A small Go client of our own that reads and writes agent locks exactly as
// the Go tool gt (gastown internal/lock) does: encoding/json into its
// LockInfo struct, and syscall.Flock on agent.lock.flock around
// read-check-write, like gt's Acquire. Standard library only.
//
//	agentlock-go read    WORKER             print the lock as gt parses it (exit 3: invalid)
//	agentlock-go acquire WORKER PID [SESS]  gt's Acquire, holding PID: exit 0 won, 1 locked
//	agentlock-go release WORKER             gt's Release (remove the lock file)
package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"time"
)

// LockInfo is gt's struct, field for field.
type LockInfo struct {
	PID        int       `json:"pid"`
	AcquiredAt time.Time `json:"acquired_at"`
	SessionID  string    `json:"session_id,omitempty"`
	Hostname   string    `json:"hostname,omitempty"`
}

func lockPath(worker string) string { return filepath.Join(worker, ".runtime", "agent.lock") }

func read(worker string) (*LockInfo, error) {
	data, err := os.ReadFile(lockPath(worker))
	if err != nil {
		return nil, err
	}
	var info LockInfo
	if err := json.Unmarshal(data, &info); err != nil {
		return nil, fmt.Errorf("invalid lock file: %w", err)
	}
	return &info, nil
}

func processExists(pid int) bool {
	if pid <= 0 {
		return false
	}
	err := syscall.Kill(pid, 0)
	return err == nil || err == syscall.EPERM
}

func write(worker string, pid int, session string) error {
	hostname, _ := os.Hostname()
	info := LockInfo{PID: pid, AcquiredAt: time.Now(), SessionID: session, Hostname: hostname}
	data, err := json.MarshalIndent(info, "", "  ")
	if err != nil {
		return err
	}
	tmp := lockPath(worker) + ".tmp"
	if err := os.WriteFile(tmp, data, 0644); err != nil {
		return err
	}
	return os.Rename(tmp, lockPath(worker))
}

func acquire(worker string, pid int, session string) (bool, string, error) {
	if err := os.MkdirAll(filepath.Join(worker, ".runtime"), 0755); err != nil {
		return false, "", err
	}
	f, err := os.OpenFile(lockPath(worker)+".flock", os.O_CREATE|os.O_RDWR, 0644)
	if err != nil {
		return false, "", err
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		return false, "", err
	}
	defer syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
	info, err := read(worker)
	if err == nil && processExists(info.PID) && info.PID != pid {
		return false, fmt.Sprintf("locked by PID %d (session: %s)", info.PID, info.SessionID), nil
	}
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		// gt treats an unreadable or invalid lock as an error, not as free.
		return false, "", err
	}
	return true, "", write(worker, pid, session)
}

func main() {
	if len(os.Args) < 3 {
		fmt.Fprintln(os.Stderr, "usage: agentlock-go read|acquire|release WORKER [PID [SESSION]]")
		os.Exit(2)
	}
	worker := os.Args[2]
	switch os.Args[1] {
	case "read":
		info, err := read(worker)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(3)
		}
		out, _ := json.Marshal(map[string]interface{}{
			"pid": info.PID, "acquired_at": info.AcquiredAt.Format(time.RFC3339Nano),
			"session_id": info.SessionID, "hostname": info.Hostname,
		})
		fmt.Println(string(out))
	case "acquire":
		pid, err := strconv.Atoi(os.Args[3])
		if err != nil {
			os.Exit(2)
		}
		session := ""
		if len(os.Args) > 4 {
			session = os.Args[4]
		}
		won, why, err := acquire(worker, pid, session)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		if !won {
			fmt.Fprintln(os.Stderr, why)
			os.Exit(1)
		}
	case "release":
		if err := os.Remove(lockPath(worker)); err != nil && !os.IsNotExist(err) {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
	default:
		os.Exit(2)
	}
}
