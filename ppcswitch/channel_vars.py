"""Every channel variable shared between the dialplan and the controller.

The dialplan (dialplans/ppcswitch.conf) and asterisk/manager.conf (channelvars)
use these exact names; tests/core/test_config.py (test_channel_variables_agree_with_
dialplan_and_manager_conf) checks that the files agree with this module, so rename here and
there together.
"""

# Set by the controller's FastAGI `route` / `next` handlers, read by the dialplan.
ROUTE_STATUS = "PPC_ROUTE_STATUS"  # one of the RouteStatus values below
DEST = "PPC_DEST"  # full Dial() target, always "PJSIP/..." built from the database
DIAL_TIMEOUT = "PPC_DIAL_TIMEOUT"  # ring timeout in seconds for DEST
BUYER_ID = "PPC_BUYER_ID"  # buyer being dialled (inherited by the buyer leg)
ATTEMPT = "PPC_ATTEMPT"  # 1-based attempt number of the current Dial
CAMPAIGN_ID = "PPC_CAMPAIGN_ID"
PUBLISHER_ID = "PPC_PUBLISHER_ID"
HANGUP_CAUSE = "PPC_HANGUP_CAUSE"  # Q.850 cause used with REJECT / NOBUYER
ZIP_CODE = "PPC_ZIP"  # digits the caller keyed in at the ZIP prompt (status ZIP)
WHISPER = "PPC_WHISPER"  # sound played to the buyer when it answers ('' = none)
# IVR publisher code (status CODE): the prompt and most digits to read, set by the controller; the digits keyed.
CODE_PROMPT = "PPC_CODE_PROMPT"  # sound name(s) joined by '&' (attribution.code_prompt), checked by the controller
CODE_DIGITS = "PPC_CODE_DIGITS"  # the longest publisher code's length
PUBLISHER_CODE = "PPC_CODE"  # digits the caller keyed in, handed to agi .../code through FILTER()

# Global variable the controller pushes over AMI so the dialplan can reach a
# default buyer even when the controller is down.
FALLBACK_DEST = "PPC_FALLBACK_DEST"

# Asterisk's own variables the dialplan and controller rely on.
AGISTATUS = "AGISTATUS"
DIALSTATUS = "DIALSTATUS"

# UserEvent the dialplan emits after every Dial() that returns, so attempts that
# never created a buyer channel (CHANUNAVAIL) are still recorded.
ATTEMPT_EVENT = "PPCAttempt"
# UserEvent emitted when the dialplan takes the fallback path.
FALLBACK_EVENT = "PPCFallback"


class RouteStatus:
    ROUTE = "ROUTE"  # dial DEST
    REJECT = "REJECT"  # hang up with HANGUP_CAUSE, nothing is dialled
    NOBUYER = "NOBUYER"  # no eligible buyer (left): polite message, HANGUP_CAUSE
    ZIP = "ZIP"  # ask the caller for a 5-digit ZIP code, then call agi .../zip with it
    CODE = "CODE"  # ask the caller for a publisher code (CODE_PROMPT, CODE_DIGITS), then call agi .../code with it


# Variables the controller sets on every answer, cleared by the dialplan before
# each AGI so a stale value can never be dialled.
RESULT_VARS = (ROUTE_STATUS, DEST, DIAL_TIMEOUT, BUYER_ID, HANGUP_CAUSE)

# Variables Asterisk attaches to every AMI channel event (manager.conf channelvars).
AMI_CHANNELVARS = (ATTEMPT, BUYER_ID, CAMPAIGN_ID, PUBLISHER_ID)

# Fraud and quality (ppcswitch.fraud): set by the controller's `screen` handler before routing.
CHALLENGE = "PPC_CHALLENGE"  # "1": play the press-1 challenge before routing
RECORD = "PPC_RECORD"  # recording file path as Asterisk sees it ('' = do not record)
PRESSED = "PPC_PRESSED"  # the digit keyed at the challenge
CHALLENGE_EVENT = "PPCChallenge"  # UserEvent: Result: passed | failed
TALK_DETECT_EVENT = "PPCTalkDetect"  # UserEvent: TALK_DETECT is on for this call (silence is then a fact)
